#include "server/model/rms_norm.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>

#include "server/common/parallel.h"
#include "server/model/cpu_clones.h"

namespace adapterd::model {


enum class NormType { kF32, kBF16, kF16 };

namespace {

// Rounds v to T and back (the model dtype's value of a float32 result).
template <typename T>
inline float Round(float v) {
  return static_cast<float>(static_cast<T>(v));
}
template <>
inline float Round<float>(float v) {
  return v;
}

template <typename T>
inline void Row(const T* __restrict x, const T* __restrict w, int64_t n, float eps, T* __restrict out) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float v = static_cast<float>(x[i + l]);
      acc[l] += v * v;
    }
  }
  float sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  for (; i < n; ++i) sum += static_cast<float>(x[i]) * static_cast<float>(x[i]);
  const float inv = 1.0f / std::sqrt(sum / static_cast<float>(n) + eps);
  for (int64_t k = 0; k < n; ++k) {
    out[k] = static_cast<T>(static_cast<float>(w[k]) * Round<T>(static_cast<float>(x[k]) * inv));
  }
}

// sum = x + h in T (as ATen's add rounds it), then out = Row(sum).
template <typename T>
inline void AddRow(const T* __restrict x, const T* __restrict h, const T* __restrict w, int64_t n, float eps,
                   T* __restrict sum, T* __restrict out) {
  for (int64_t k = 0; k < n; ++k) sum[k] = static_cast<T>(static_cast<float>(x[k]) + static_cast<float>(h[k]));
  Row(sum, w, n, eps, out);
}

template <typename T>
void Rows(const void* x, const void* h, const void* w, int64_t begin, int64_t end, int64_t n, float eps, void* sum,
          void* out) {
  const T* xs = static_cast<const T*>(x);
  T* os = static_cast<T*>(out);
  for (int64_t r = begin; r < end; ++r) {
    if (h == nullptr) {
      Row(xs + r * n, static_cast<const T*>(w), n, eps, os + r * n);
    } else {
      AddRow(xs + r * n, static_cast<const T*>(h) + r * n, static_cast<const T*>(w), n, eps,
             static_cast<T*>(sum) + r * n, os + r * n);
    }
  }
}

}  // namespace

// Rows [begin, end) of x (plus h where h is not null, the sum written to
// `sum`) normalised into `out`; the loop cloned per instruction set.
void RmsNormRows(NormType type, const void* x, const void* h, const void* w, int64_t begin, int64_t end, int64_t n,
                 float eps, void* sum, void* out);
ADAPTERD_CLONES
void RmsNormRows(NormType type, const void* x, const void* h, const void* w, int64_t begin, int64_t end, int64_t n,
                 float eps, void* sum, void* out) {
  switch (type) {
    case NormType::kF32: return Rows<float>(x, h, w, begin, end, n, eps, sum, out);
    case NormType::kBF16: return Rows<c10::BFloat16>(x, h, w, begin, end, n, eps, sum, out);
    case NormType::kF16: return Rows<c10::Half>(x, h, w, begin, end, n, eps, sum, out);
  }
}

namespace {

bool Direct(const at::Tensor& x, const at::Tensor& weight) {
  const at::ScalarType t = x.scalar_type();
  return x.device().is_cpu() && x.dim() == 2 && x.is_contiguous() && weight.is_contiguous() &&
         weight.device().is_cpu() && weight.scalar_type() == t && weight.dim() == 1 && weight.size(0) == x.size(1) &&
         (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf);
}

at::Tensor AtenRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor h = x.to(at::kFloat);
  at::Tensor var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(var + eps);
  return weight * h.to(x.scalar_type());
}

// One parallel pass over the rows of x (and h), into out (and sum).
void NormRows(const at::Tensor& x, const at::Tensor* h, const at::Tensor& weight, double eps, at::Tensor* sum,
              at::Tensor& out) {
  const at::ScalarType t = x.scalar_type();
  const NormType type = t == at::kFloat ? NormType::kF32 : t == at::kBFloat16 ? NormType::kBF16 : NormType::kF16;
  const int64_t n = x.size(1);
  const void* xp = x.data_ptr();
  const void* hp = h != nullptr ? h->data_ptr() : nullptr;
  const void* wp = weight.data_ptr();
  void* sp = sum != nullptr ? sum->data_ptr() : nullptr;
  void* op = out.data_ptr();
  // Threads only where each gets enough rows to pay for waking it: a decode
  // step's few rows are microseconds of work.
  constexpr int64_t kElementsPerThread = int64_t{1} << 16;
  const int64_t grain = std::max<int64_t>(1, kElementsPerThread / std::max<int64_t>(n, 1));
  at::parallel_for(0, x.size(0), grain, [&](int64_t begin, int64_t end) {
    RmsNormRows(type, xp, hp, wp, begin, end, n, static_cast<float>(eps), sp, op);
  });
}

}  // namespace

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (!Direct(x, weight)) return AtenRmsNorm(x, weight, eps);
  at::Tensor out = at::empty_like(x);
  NormRows(x, nullptr, weight, eps, nullptr, out);
  return out;
}

AddRmsNormResult AddRmsNorm(const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight, double eps) {
  if (!Direct(x, weight) || !h.is_contiguous() || h.sizes() != x.sizes() || h.scalar_type() != x.scalar_type() ||
      !h.device().is_cpu()) {
    at::Tensor sum = x + h;
    return {sum, RmsNorm(sum, weight, eps)};
  }
  AddRmsNormResult r{at::empty_like(x), at::empty_like(x)};
  NormRows(x, &h, weight, eps, &r.sum, r.normed);
  return r;
}

}  // namespace adapterd::model
