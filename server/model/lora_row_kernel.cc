#include "server/model/lora_row_kernel.h"

#include <algorithm>
#include <bit>

#include "server/model/cpu_clones.h"

namespace adapterd::model {
namespace {


// Stored element -> fp32, exactly.
struct F32 {
  using T = float;
  static ADAPTERD_INLINE float Load(const T* p) { return *p; }
};
struct BF16 {
  using T = uint16_t;
  static ADAPTERD_INLINE float Load(const T* p) {
    return std::bit_cast<float>(static_cast<uint32_t>(*p) << 16);
  }
};
struct F16 {
  using T = _Float16;
  static ADAPTERD_INLINE float Load(const T* p) { return static_cast<float>(*p); }
};

// With the rank known at compile time the accumulators stay in registers.
template <class W, int R>
ADAPTERD_INLINE void ShrinkFixed(const float* __restrict x, const typename W::T* __restrict a_t,
                                 int64_t in, float scale, float* __restrict tmp) {
  float acc[R] = {};
  for (int64_t i = 0; i < in; ++i) {
    const float xi = x[i];
    const typename W::T* row = a_t + i * R;
    for (int k = 0; k < R; ++k) acc[k] += xi * W::Load(row + k);
  }
  for (int k = 0; k < R; ++k) tmp[k] = acc[k] * scale;
}

template <class W>
ADAPTERD_INLINE void ShrinkAny(const float* __restrict x, const typename W::T* __restrict a_t,
                               int64_t in, int64_t r, float scale, float* __restrict tmp) {
  std::fill(tmp, tmp + r, 0.0f);
  for (int64_t i = 0; i < in; ++i) {
    const float xi = x[i];
    const typename W::T* row = a_t + i * r;
    for (int64_t k = 0; k < r; ++k) tmp[k] += xi * W::Load(row + k);
  }
  for (int64_t k = 0; k < r; ++k) tmp[k] *= scale;
}

template <class W>
ADAPTERD_INLINE void Shrink(const float* __restrict x, const void* a, int64_t in, int64_t r,
                            float scale, float* __restrict tmp) {
  const auto* a_t = static_cast<const typename W::T*>(a);
  switch (r) {
    case 8: return ShrinkFixed<W, 8>(x, a_t, in, scale, tmp);
    case 16: return ShrinkFixed<W, 16>(x, a_t, in, scale, tmp);
    case 32: return ShrinkFixed<W, 32>(x, a_t, in, scale, tmp);
    default: return ShrinkAny<W>(x, a_t, in, r, scale, tmp);
  }
}

// M modules of rank R over one input: M * R accumulators in registers.
template <class W, int R, int M>
ADAPTERD_INLINE void ShrinkMultiFixed(const float* __restrict x, const void* const* a, int64_t in,
                                      const float* scales, float* __restrict tmp) {
  const typename W::T* a_t[M];
  for (int m = 0; m < M; ++m) a_t[m] = static_cast<const typename W::T*>(a[m]);
  float acc[M][R] = {};
  for (int64_t i = 0; i < in; ++i) {
    const float xi = x[i];
    for (int m = 0; m < M; ++m) {
      const typename W::T* row = a_t[m] + i * R;
      for (int k = 0; k < R; ++k) acc[m][k] += xi * W::Load(row + k);
    }
  }
  for (int m = 0; m < M; ++m) {
    for (int k = 0; k < R; ++k) tmp[m * R + k] = acc[m][k] * scales[m];
  }
}

template <class W>
ADAPTERD_INLINE void ShrinkMulti(const float* __restrict x, const void* const* a, int64_t count, int64_t in,
                                 int64_t r, const float* scales, float* __restrict tmp) {
  if (count == 2 && r == 8) return ShrinkMultiFixed<W, 8, 2>(x, a, in, scales, tmp);
  if (count == 2 && r == 16) return ShrinkMultiFixed<W, 16, 2>(x, a, in, scales, tmp);
  if (count == 3 && r == 8) return ShrinkMultiFixed<W, 8, 3>(x, a, in, scales, tmp);
  if (count == 3 && r == 16) return ShrinkMultiFixed<W, 16, 3>(x, a, in, scales, tmp);
  for (int64_t m = 0; m < count; ++m) Shrink<W>(x, a[m], in, r, scales[m], tmp + m * r);
}

template <class W>
ADAPTERD_INLINE void Expand(const float* __restrict tmp, const void* b, int64_t r, int64_t out,
                            float* __restrict y) {
  const auto* b_t = static_cast<const typename W::T*>(b);
  // Four rank rows per sweep over y: a quarter of the loads and stores of y.
  int64_t k = 0;
  for (; k + 4 <= r; k += 4) {
    const float t0 = tmp[k], t1 = tmp[k + 1], t2 = tmp[k + 2], t3 = tmp[k + 3];
    const typename W::T* b0 = b_t + k * out;
    const typename W::T* b1 = b0 + out;
    const typename W::T* b2 = b1 + out;
    const typename W::T* b3 = b2 + out;
    for (int64_t o = 0; o < out; ++o) {
      y[o] += t0 * W::Load(b0 + o) + t1 * W::Load(b1 + o) + t2 * W::Load(b2 + o) +
              t3 * W::Load(b3 + o);
    }
  }
  for (; k < r; ++k) {
    const float t = tmp[k];
    const typename W::T* bk = b_t + k * out;
    for (int64_t o = 0; o < out; ++o) y[o] += t * W::Load(bk + o);
  }
}

template <class W>
ADAPTERD_INLINE void Widen(const void* src, int64_t n, float* __restrict dst) {
  const auto* s = static_cast<const typename W::T*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = W::Load(s + i);
}

}  // namespace

ADAPTERD_CLONES
void WidenRow(const void* src, LoraWeightType type, int64_t n, float* __restrict dst) {
  switch (type) {
    case LoraWeightType::kF32: return Widen<F32>(src, n, dst);
    case LoraWeightType::kF16: return Widen<F16>(src, n, dst);
    case LoraWeightType::kBF16: return Widen<BF16>(src, n, dst);
  }
}

ADAPTERD_CLONES
void NarrowRow(const float* __restrict src, int64_t n, LoraWeightType type, void* dst) {
  switch (type) {
    case LoraWeightType::kF32:
      std::copy(src, src + n, static_cast<float*>(dst));
      return;
    case LoraWeightType::kF16: {
      auto* d = static_cast<_Float16*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<_Float16>(src[i]);
      return;
    }
    case LoraWeightType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t u = std::bit_cast<uint32_t>(src[i]);
        const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        d[i] = static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
      }
      return;
    }
  }
}

ADAPTERD_CLONES
void LoraShrinkRow(const float* __restrict x, const void* a_t, LoraWeightType type, int64_t in,
                   int64_t r, float scale, float* __restrict tmp) {
  switch (type) {
    case LoraWeightType::kF32: return Shrink<F32>(x, a_t, in, r, scale, tmp);
    case LoraWeightType::kF16: return Shrink<F16>(x, a_t, in, r, scale, tmp);
    case LoraWeightType::kBF16: return Shrink<BF16>(x, a_t, in, r, scale, tmp);
  }
}

ADAPTERD_CLONES
void LoraShrinkRowMulti(const float* __restrict x, const void* const* a_ts, int64_t count, LoraWeightType type,
                        int64_t in, int64_t r, const float* scales, float* __restrict tmp) {
  switch (type) {
    case LoraWeightType::kF32: return ShrinkMulti<F32>(x, a_ts, count, in, r, scales, tmp);
    case LoraWeightType::kF16: return ShrinkMulti<F16>(x, a_ts, count, in, r, scales, tmp);
    case LoraWeightType::kBF16: return ShrinkMulti<BF16>(x, a_ts, count, in, r, scales, tmp);
  }
}

ADAPTERD_CLONES
void LoraExpandRow(const float* __restrict tmp, const void* b_t, LoraWeightType type, int64_t r,
                   int64_t out, float* __restrict y) {
  switch (type) {
    case LoraWeightType::kF32: return Expand<F32>(tmp, b_t, r, out, y);
    case LoraWeightType::kF16: return Expand<F16>(tmp, b_t, r, out, y);
    case LoraWeightType::kBF16: return Expand<BF16>(tmp, b_t, r, out, y);
  }
}

}  // namespace adapterd::model
