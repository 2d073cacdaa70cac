#include "server/model/swiglu.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "server/common/parallel.h"
#include "server/model/cpu_clones.h"
#include "server/model/cpu_vec.h"

namespace adapterd::model {

enum class SwiGluType { kF32, kBF16, kF16 };

namespace {

using cpu::BF16;
using cpu::F16;
using cpu::F32;
using cpu::V16;

template <class W>
ADAPTERD_INLINE void Rows(const void* gate, const void* up, void* out, int64_t g_stride, int64_t u_stride,
                          int64_t cols, int64_t begin, int64_t end) {
  using T = typename W::T;
  for (int64_t t = begin; t < end; ++t) {
    const T* g = static_cast<const T*>(gate) + t * g_stride;
    const T* u = static_cast<const T*>(up) + t * u_stride;
    T* o = static_cast<T*>(out) + t * cols;
    int64_t i = 0;
    for (; i + 32 <= cols; i += 32) {
      V16 ga, gb, ua, ub;
      W::Load32(g + i, ga, gb);
      W::Load32(u + i, ua, ub);
      // silu(g) rounded to the dtype before the product, as transformers'
      // two ATen ops round it (exact in float32).
      W::Store32(o + i, W::NarrowN(ga / (1.0f + cpu::Exp(-ga))) * ua, W::NarrowN(gb / (1.0f + cpu::Exp(-gb))) * ub);
    }
    for (; i < cols; ++i) {
      const float gi = W::Load(g + i);
      o[i] = W::Round(W::Narrow(gi / (1.0f + std::exp(-gi))) * W::Load(u + i));
    }
  }
}

}  // namespace

// Rows [begin, end); the loop cloned per instruction set.
void SwiGluRows(SwiGluType type, const void* gate, const void* up, void* out, int64_t g_stride, int64_t u_stride,
                int64_t cols, int64_t begin, int64_t end);
ADAPTERD_CLONES
void SwiGluRows(SwiGluType type, const void* gate, const void* up, void* out, int64_t g_stride, int64_t u_stride,
                int64_t cols, int64_t begin, int64_t end) {
  switch (type) {
    case SwiGluType::kF32:
      Rows<F32>(gate, up, out, g_stride, u_stride, cols, begin, end);
      break;
    case SwiGluType::kBF16:
      Rows<BF16>(gate, up, out, g_stride, u_stride, cols, begin, end);
      break;
    case SwiGluType::kF16:
      Rows<F16>(gate, up, out, g_stride, u_stride, cols, begin, end);
      break;
  }
}

bool SwiGluSupports(const at::Tensor& gate, const at::Tensor& up) {
  const at::ScalarType t = gate.scalar_type();
  return (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf) && up.scalar_type() == t &&
         gate.device().is_cpu() && up.device().is_cpu() && gate.dim() == 2 && up.sizes() == gate.sizes() &&
         gate.stride(1) == 1 && up.stride(1) == 1;
}

at::Tensor SwiGlu(const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(SwiGluSupports(gate, up),
              "SwiGLU needs 2-D CPU tensors of one shape and dtype (float32, bfloat16 or float16) with unit column "
              "stride");
  const int64_t rows = gate.size(0), cols = gate.size(1);
  at::Tensor out = at::empty({rows, cols}, gate.options());
  if (out.numel() == 0) return out;
  const SwiGluType type = gate.scalar_type() == at::kFloat      ? SwiGluType::kF32
                          : gate.scalar_type() == at::kBFloat16 ? SwiGluType::kBF16
                                                                : SwiGluType::kF16;
  const void* g = gate.data_ptr();
  const void* u = up.data_ptr();
  void* o = out.data_ptr();
  constexpr int64_t kElementsPerThread = int64_t{1} << 15;
  const int64_t grain = std::max<int64_t>(1, kElementsPerThread / cols);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    SwiGluRows(type, g, u, o, gate.stride(0), up.stride(0), cols, begin, end);
  });
  return out;
}

}  // namespace adapterd::model
