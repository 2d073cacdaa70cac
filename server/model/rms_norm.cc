#include "server/model/rms_norm.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "server/common/parallel.h"
#include "server/model/cpu_clones.h"
#include "server/model/cpu_vec.h"

namespace adapterd::model {

enum class NormType { kF32, kBF16, kF16 };

namespace {

using cpu::BF16;
using cpu::F16;
using cpu::F32;
using cpu::V16;

// inv = 1 / sqrt(mean(x^2) + eps) from the sums of squares in `acc`
// (lanes) and `tail` (the elements past the last whole vector pair).
ADAPTERD_INLINE float InverseRms(V16 a, V16 b, float tail, int64_t n, float eps) {
  float sum = 0;
  for (int l = 0; l < 16; ++l) sum += a[l] + b[l];
  sum += tail;
  return 1.0f / std::sqrt(sum / static_cast<float>(n) + eps);
}

// out = w * round(x * inv), in 32-element vector pairs, the product and
// its rounding as transformers' ops make them.
template <class W>
ADAPTERD_INLINE void Scale(const typename W::T* __restrict x, const typename W::T* __restrict w, int64_t n, float inv,
                           typename W::T* __restrict out) {
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    V16 xa, xb, wa, wb;
    W::Load32(x + k, xa, xb);
    W::Load32(w + k, wa, wb);
    W::Store32(out + k, wa * W::NarrowN(xa * inv), wb * W::NarrowN(xb * inv));
  }
  for (; k < n; ++k) out[k] = W::Round(W::Load(w + k) * W::Narrow(W::Load(x + k) * inv));
}

template <class W>
ADAPTERD_INLINE void Row(const typename W::T* __restrict x, const typename W::T* __restrict w, int64_t n, float eps,
                         typename W::T* __restrict out) {
  V16 a{}, b{};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    V16 xa, xb;
    W::Load32(x + i, xa, xb);
    a += xa * xa;
    b += xb * xb;
  }
  float tail = 0;
  for (; i < n; ++i) tail += W::Load(x + i) * W::Load(x + i);
  Scale<W>(x, w, n, InverseRms(a, b, tail, n, eps), out);
}

// sum = x + h rounded to the dtype (as ATen's add rounds it), then out =
// Row(sum), the squares summed as the sum is written.
template <class W>
ADAPTERD_INLINE void AddRow(const typename W::T* __restrict x, const typename W::T* __restrict h,
                            const typename W::T* __restrict w, int64_t n, float eps, typename W::T* __restrict sum,
                            typename W::T* __restrict out) {
  V16 a{}, b{};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    V16 xa, xb, ha, hb;
    W::Load32(x + i, xa, xb);
    W::Load32(h + i, ha, hb);
    const V16 sa = W::NarrowN(xa + ha), sb = W::NarrowN(xb + hb);
    W::Store32(sum + i, sa, sb);
    a += sa * sa;
    b += sb * sb;
  }
  float tail = 0;
  for (; i < n; ++i) {
    const float v = W::Narrow(W::Load(x + i) + W::Load(h + i));
    sum[i] = W::Round(v);
    tail += v * v;
  }
  Scale<W>(sum, w, n, InverseRms(a, b, tail, n, eps), out);
}

template <class W>
ADAPTERD_INLINE void Rows(const void* x, const void* h, const void* w, int64_t begin, int64_t end, int64_t n,
                          float eps, void* sum, void* out) {
  using T = typename W::T;
  const T* xs = static_cast<const T*>(x);
  const T* ws = static_cast<const T*>(w);
  T* os = static_cast<T*>(out);
  for (int64_t r = begin; r < end; ++r) {
    if (h == nullptr) {
      Row<W>(xs + r * n, ws, n, eps, os + r * n);
    } else {
      AddRow<W>(xs + r * n, static_cast<const T*>(h) + r * n, ws, n, eps, static_cast<T*>(sum) + r * n, os + r * n);
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
    case NormType::kF32: return Rows<F32>(x, h, w, begin, end, n, eps, sum, out);
    case NormType::kBF16: return Rows<BF16>(x, h, w, begin, end, n, eps, sum, out);
    case NormType::kF16: return Rows<F16>(x, h, w, begin, end, n, eps, sum, out);
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
