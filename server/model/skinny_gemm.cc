#include "server/model/skinny_gemm.h"

#include <algorithm>
#include <type_traits>

#include "server/model/cpu_clones.h"
#include "server/model/cpu_vec.h"

namespace adapterd::model {
namespace {

using cpu::BF16;
using cpu::F32;
using cpu::LoadBytes;
using cpu::V16;
using cpu::Vec;

// A block is kTileRows rows of x against kWeightRows rows of W: 16 sums in
// vector registers, and 8 loads for 16 multiply-adds.
constexpr int kTileRows = 4;
constexpr int kWeightRows = 4;

ADAPTERD_INLINE float Sum(V16 v) {
  using V8 = Vec<8>::F;
  using V4 = Vec<4>::F;
  const V8 h = LoadBytes<V8>(&v) + LoadBytes<V8>(reinterpret_cast<const char*>(&v) + sizeof(V8));
  const V4 q = LoadBytes<V4>(&h) + LoadBytes<V4>(reinterpret_cast<const char*>(&h) + sizeof(V4));
  return (q[0] + q[2]) + (q[1] + q[3]);
}

// Rows [n, n + NB) of W against rows [0, MT) of the packed x at px.
template <class W, int MT, int NB>
ADAPTERD_INLINE void Block(const float* __restrict px, int64_t k, const typename W::T* __restrict w,
                           const typename W::T* bias, int64_t n, typename W::T* __restrict y, int64_t ldy) {
  using T = typename W::T;
  const T* rows[NB];
  for (int b = 0; b < NB; ++b) rows[b] = w + (n + b) * k;
  V16 acc[NB][MT] = {};
  float tail[NB][MT] = {};
  if constexpr (std::is_same_v<W, BF16>) {
    const int64_t pairs = k / 2;
    int64_t j = 0;
    for (; j + 16 <= pairs; j += 16) {
      V16 even[NB], odd[NB];
      for (int b = 0; b < NB; ++b) BF16::LoadPairs<16>(rows[b] + 2 * j, even[b], odd[b]);
      for (int b = 0; b < NB; ++b) __builtin_prefetch(rows[b] + NB * k + 2 * j);
      for (int i = 0; i < MT; ++i) {
        const V16 xe = LoadBytes<V16>(px + i * k + j), xo = LoadBytes<V16>(px + i * k + pairs + j);
        for (int b = 0; b < NB; ++b) {
          acc[b][i] += even[b] * xe;
          acc[b][i] += odd[b] * xo;
        }
      }
    }
    for (; j < pairs; ++j) {
      for (int b = 0; b < NB; ++b) {
        const float we = BF16::Load(rows[b] + 2 * j), wo = BF16::Load(rows[b] + 2 * j + 1);
        for (int i = 0; i < MT; ++i) tail[b][i] += we * px[i * k + j] + wo * px[i * k + pairs + j];
      }
    }
    if (k % 2 != 0) {
      for (int b = 0; b < NB; ++b) {
        for (int i = 0; i < MT; ++i) tail[b][i] += BF16::Load(rows[b] + k - 1) * px[i * k + k - 1];
      }
    }
  } else {
    int64_t j = 0;
    for (; j + 16 <= k; j += 16) {
      V16 wv[NB];
      for (int b = 0; b < NB; ++b) wv[b] = F32::LoadN<16>(rows[b] + j);
      for (int b = 0; b < NB; ++b) __builtin_prefetch(rows[b] + NB * k + j);
      V16 xv[MT];
      for (int i = 0; i < MT; ++i) xv[i] = LoadBytes<V16>(px + i * k + j);
      for (int b = 0; b < NB; ++b) {
        for (int i = 0; i < MT; ++i) acc[b][i] += wv[b] * xv[i];
      }
    }
    for (; j < k; ++j) {
      for (int b = 0; b < NB; ++b) {
        for (int i = 0; i < MT; ++i) tail[b][i] += rows[b][j] * px[i * k + j];
      }
    }
  }
  for (int b = 0; b < NB; ++b) {
    const float bv = bias != nullptr ? W::Load(bias + n + b) : 0.0f;
    for (int i = 0; i < MT; ++i) {
      const float v = Sum(acc[b][i]) + tail[b][i] + bv;
      if constexpr (std::is_same_v<W, BF16>) {
        y[i * ldy + n + b] = BF16::Round(v);
      } else {
        y[i * ldy + n + b] = v;
      }
    }
  }
}

// Rows [n0, n1) of W against a tile of MT rows: four rows of W at a time,
// then the rest one by one.
template <class W, int MT>
ADAPTERD_INLINE void Tile(const float* px, int64_t k, const typename W::T* w, const typename W::T* bias,
                          int64_t n0, int64_t n1, typename W::T* y, int64_t ldy) {
  int64_t n = n0;
  for (; n + kWeightRows <= n1; n += kWeightRows) Block<W, MT, kWeightRows>(px, k, w, bias, n, y, ldy);
  for (; n < n1; ++n) Block<W, MT, 1>(px, k, w, bias, n, y, ldy);
}

template <class W>
ADAPTERD_INLINE void Gemm(const float* px, int64_t m, int64_t k, const void* wp, const void* bp, int64_t n0,
                          int64_t n1, void* yp, int64_t ldy) {
  using T = typename W::T;
  const auto* w = static_cast<const T*>(wp);
  const auto* bias = static_cast<const T*>(bp);
  auto* y = static_cast<T*>(yp);
  // A slice of W's rows small enough to stay in L2 while every tile of x
  // passes over it, so that W is read from memory once.
  const int64_t slice = std::max<int64_t>(
      kWeightRows, (int64_t{256} << 10) / (k * static_cast<int64_t>(sizeof(T))) / kWeightRows * kWeightRows);
  for (int64_t s = n0; s < n1; s += slice) {
    const int64_t e = std::min(n1, s + slice);
    for (int64_t i = 0; i < m; i += kTileRows) {
      const float* px_i = px + i * k;
      T* y_i = y + i * ldy;
      switch (std::min<int64_t>(kTileRows, m - i)) {
        case 1: Tile<W, 1>(px_i, k, w, bias, s, e, y_i, ldy); break;
        case 2: Tile<W, 2>(px_i, k, w, bias, s, e, y_i, ldy); break;
        case 3: Tile<W, 3>(px_i, k, w, bias, s, e, y_i, ldy); break;
        default: Tile<W, 4>(px_i, k, w, bias, s, e, y_i, ldy); break;
      }
    }
  }
}

}  // namespace

ADAPTERD_CLONES
void SkinnyPackRows(const void* x, SkinnyType type, int64_t m, int64_t k, int64_t ldx, float* __restrict packed) {
  if (type == SkinnyType::kF32) {
    const auto* src = static_cast<const float*>(x);
    for (int64_t i = 0; i < m; ++i) std::copy(src + i * ldx, src + i * ldx + k, packed + i * k);
    return;
  }
  const auto* src = static_cast<const uint16_t*>(x);
  const int64_t pairs = k / 2;
  for (int64_t i = 0; i < m; ++i) {
    const uint16_t* row = src + i * ldx;
    float* out = packed + i * k;
    for (int64_t j = 0; j < pairs; ++j) {
      out[j] = BF16::Load(row + 2 * j);
      out[pairs + j] = BF16::Load(row + 2 * j + 1);
    }
    if (k % 2 != 0) out[k - 1] = BF16::Load(row + k - 1);
  }
}

ADAPTERD_CLONES
void SkinnyGemm(const float* packed, int64_t m, int64_t k, const void* w, const void* bias, SkinnyType type,
                int64_t n0, int64_t n1, void* y, int64_t ldy) {
  switch (type) {
    case SkinnyType::kF32: return Gemm<F32>(packed, m, k, w, bias, n0, n1, y, ldy);
    case SkinnyType::kBF16: return Gemm<BF16>(packed, m, k, w, bias, n0, n1, y, ldy);
  }
}

}  // namespace adapterd::model
