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

}  // namespace

void RmsNormRows(NormType type, const void* x, const void* w, int64_t begin, int64_t end, int64_t n, float eps,
                 void* out);
ADAPTERD_CLONES
void RmsNormRows(NormType type, const void* x, const void* w, int64_t begin, int64_t end, int64_t n, float eps,
                 void* out) {
  for (int64_t r = begin; r < end; ++r) {
    switch (type) {
      case NormType::kF32:
        Row(static_cast<const float*>(x) + r * n, static_cast<const float*>(w), n, eps,
            static_cast<float*>(out) + r * n);
        break;
      case NormType::kBF16:
        Row(static_cast<const c10::BFloat16*>(x) + r * n, static_cast<const c10::BFloat16*>(w), n, eps,
            static_cast<c10::BFloat16*>(out) + r * n);
        break;
      case NormType::kF16:
        Row(static_cast<const c10::Half*>(x) + r * n, static_cast<const c10::Half*>(w), n, eps,
            static_cast<c10::Half*>(out) + r * n);
        break;
    }
  }
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::ScalarType t = x.scalar_type();
  const bool direct = x.device().is_cpu() && x.dim() == 2 && x.is_contiguous() && weight.is_contiguous() &&
                      weight.scalar_type() == t && (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf);
  if (!direct) {
    at::Tensor h = x.to(at::kFloat);
    at::Tensor var = h.pow(2).mean(-1, /*keepdim=*/true);
    h = h * at::rsqrt(var + eps);
    return weight * h.to(x.scalar_type());
  }
  const NormType type = t == at::kFloat ? NormType::kF32 : t == at::kBFloat16 ? NormType::kBF16 : NormType::kF16;
  at::Tensor out = at::empty_like(x);
  const int64_t n = x.size(1);
  const void* xp = x.data_ptr();
  const void* wp = weight.data_ptr();
  void* op = out.data_ptr();
  // Threads only where each gets enough rows to pay for waking it: a decode
  // step's few rows are microseconds of work.
  constexpr int64_t kElementsPerThread = int64_t{1} << 16;
  const int64_t grain = std::max<int64_t>(1, kElementsPerThread / std::max<int64_t>(n, 1));
  at::parallel_for(0, x.size(0), grain, [&](int64_t begin, int64_t end) {
    RmsNormRows(type, xp, wp, begin, end, n, static_cast<float>(eps), op);
  });
  return out;
}

}  // namespace adapterd::model
