#include "server/model/lora_row_kernel.h"

#include <algorithm>

namespace adapterd::model {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ADAPTERD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ADAPTERD_CLONES
#endif

// With the rank known at compile time the accumulators stay in registers.
template <int R>
inline __attribute__((always_inline)) void ShrinkFixed(const float* __restrict x,
                                                        const float* __restrict a_t, int64_t in,
                                                        float scale, float* __restrict tmp) {
  float acc[R] = {};
  for (int64_t i = 0; i < in; ++i) {
    const float xi = x[i];
    const float* row = a_t + i * R;
    for (int k = 0; k < R; ++k) acc[k] += xi * row[k];
  }
  for (int k = 0; k < R; ++k) tmp[k] = acc[k] * scale;
}

inline __attribute__((always_inline)) void ShrinkAny(const float* __restrict x,
                                                      const float* __restrict a_t, int64_t in,
                                                      int64_t r, float scale,
                                                      float* __restrict tmp) {
  std::fill(tmp, tmp + r, 0.0f);
  for (int64_t i = 0; i < in; ++i) {
    const float xi = x[i];
    const float* row = a_t + i * r;
    for (int64_t k = 0; k < r; ++k) tmp[k] += xi * row[k];
  }
  for (int64_t k = 0; k < r; ++k) tmp[k] *= scale;
}

}  // namespace

ADAPTERD_CLONES
void LoraShrinkRow(const float* __restrict x, const float* __restrict a_t, int64_t in, int64_t r,
                   float scale, float* __restrict tmp) {
  switch (r) {
    case 8: return ShrinkFixed<8>(x, a_t, in, scale, tmp);
    case 16: return ShrinkFixed<16>(x, a_t, in, scale, tmp);
    case 32: return ShrinkFixed<32>(x, a_t, in, scale, tmp);
    default: return ShrinkAny(x, a_t, in, r, scale, tmp);
  }
}

ADAPTERD_CLONES
void LoraExpandRow(const float* __restrict tmp, const float* __restrict b_t, int64_t r,
                   int64_t out, float* __restrict y) {
  // Four rank rows per sweep over y: a quarter of the loads and stores of y.
  int64_t k = 0;
  for (; k + 4 <= r; k += 4) {
    const float t0 = tmp[k], t1 = tmp[k + 1], t2 = tmp[k + 2], t3 = tmp[k + 3];
    const float* b0 = b_t + k * out;
    const float* b1 = b0 + out;
    const float* b2 = b1 + out;
    const float* b3 = b2 + out;
    for (int64_t o = 0; o < out; ++o) y[o] += t0 * b0[o] + t1 * b1[o] + t2 * b2[o] + t3 * b3[o];
  }
  for (; k < r; ++k) {
    const float t = tmp[k];
    const float* b = b_t + k * out;
    for (int64_t o = 0; o < out; ++o) y[o] += t * b[o];
  }
}

}  // namespace adapterd::model
