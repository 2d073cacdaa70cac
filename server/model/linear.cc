#include "server/model/linear.h"

#include <ATen/ATen.h>
#include <ATen/cpu/Utils.h>
#include <c10/core/GradMode.h>

#include <vector>

#include "server/common/parallel.h"
#include "server/model/packed_linear.h"
#include "server/model/skinny_gemm.h"

namespace adapterd::model {
namespace {

// Rows of w per task: enough that a thread's share is one contiguous run.
constexpr int64_t kGrainRows = 64;

bool SkinnyDtype(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
}

bool AutogradOn(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return c10::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
}

bool TakesPackedPath(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& packed) {
  if (!packed.defined() || !x.device().is_cpu() || x.dim() != 2 || x.size(0) < 1 || x.size(1) != w.size(1)) {
    return false;
  }
  if (x.scalar_type() != w.scalar_type() || x.is_conj() || x.is_neg()) return false;
  if (b.defined() && (b.dim() != 1 || b.scalar_type() != x.scalar_type() || !b.device().is_cpu())) return false;
  return !AutogradOn(x, w, b);
}

}  // namespace

bool PacksWeights(at::ScalarType dtype) {
  // oneDNN's bfloat16 GEMM wants AVX-512's bfloat16 instructions to be fast.
  return dtype == at::kFloat || (dtype == at::kBFloat16 && at::cpu::is_avx512_bf16_supported());
}

at::Tensor PackLinearWeight(const at::Tensor& w) {
  if (!w.device().is_cpu() || w.dim() != 2 || w.numel() == 0 || !PacksWeights(w.scalar_type())) return {};
  return PackForInnerProduct(w);
}

int64_t DefaultSkinnyRows(at::ScalarType dtype, bool packed) {
  if (dtype == at::kFloat) return packed ? 16 : 32;
  if (dtype == at::kBFloat16) {
    if (at::cpu::is_amx_tile_supported()) return 8;
    return packed ? 2 : 32;
  }
  return 0;
}

LinearPath ChooseLinearPath(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t skinny_rows,
                            const at::Tensor& packed) {
  if (TakesSkinnyPath(x, w, b, skinny_rows)) return LinearPath::kSkinny;
  if (TakesPackedPath(x, w, b, packed)) return LinearPath::kPacked;
  return LinearPath::kAten;
}

bool TakesSkinnyPath(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t skinny_rows) {
  if (skinny_rows <= 0 || !x.device().is_cpu() || x.dim() != 2 || w.dim() != 2) return false;
  if (x.size(0) < 1 || x.size(0) > skinny_rows || x.size(1) != w.size(1) || x.size(1) == 0) return false;
  if (!SkinnyDtype(x) || w.scalar_type() != x.scalar_type() || !w.device().is_cpu() || !w.is_contiguous()) {
    return false;
  }
  if (x.stride(1) != 1 || x.is_conj() || x.is_neg() || w.is_conj() || w.is_neg()) return false;
  if (b.defined() && (b.dim() != 1 || b.size(0) != w.size(0) || b.scalar_type() != x.scalar_type() ||
                      !b.device().is_cpu() || !b.is_contiguous())) {
    return false;
  }
  return !AutogradOn(x, w, b);
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t skinny_rows,
                  const at::Tensor& packed) {
  switch (ChooseLinearPath(x, w, b, skinny_rows, packed)) {
    case LinearPath::kSkinny:
      break;
    case LinearPath::kPacked:
      return PackedInnerProduct(x, w, packed, b);
    case LinearPath::kAten:
      return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
  }
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  const SkinnyType type = x.scalar_type() == at::kFloat ? SkinnyType::kF32 : SkinnyType::kBF16;
  at::Tensor y = at::empty({m, n}, x.options());
  const void* xp = x.const_data_ptr();
  // bfloat16 (and strided) rows are staged once per product, in a buffer
  // each calling thread keeps, so that a decode step's products allocate
  // nothing (a fresh one of 32 rows of 2048 would be mapped and unmapped).
  thread_local std::vector<float> staged;
  const float* rows = static_cast<const float*>(xp);
  if (type != SkinnyType::kF32 || x.stride(0) != k) {
    if (staged.size() < static_cast<size_t>(m * k)) staged.resize(static_cast<size_t>(m * k));
    SkinnyPackRows(xp, type, m, k, x.stride(0), staged.data());
    rows = staged.data();
  }
  const void* wp = w.const_data_ptr();
  const void* bp = b.defined() ? b.const_data_ptr() : nullptr;
  void* yp = y.mutable_data_ptr();
  at::parallel_for(0, n, kGrainRows, [&](int64_t n0, int64_t n1) {
    SkinnyGemm(rows, m, k, wp, bp, type, n0, n1, yp, n);
  });
  return y;
}

}  // namespace adapterd::model
