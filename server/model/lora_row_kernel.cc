#include "server/model/lora_row_kernel.h"

#include <algorithm>
#include <type_traits>

#include "server/model/cpu_clones.h"
#include "server/model/cpu_vec.h"

namespace adapterd::model {
namespace {

// How far ahead of its reads a kernel asks for the weights' lines. A^T and
// B^T are short streams (a few KiB to tens of KiB each) that the hardware
// prefetcher picks up late, if at all. The distance is the product of
// the read rate and the memory's latency: 1 KiB was tuned on a Xeon reading
// about 20 GB/s on 2 cores; on an EPYC reading about 90 GB/s, 2 KiB read
// 1.1-1.2x faster than 1 KiB in bfloat16 (adapterd_lora_row_bench,
// docs/benchmarks.md). 2 KiB has not been measured on the Xeon.
constexpr int64_t kAheadBytes = 2048;

// Asks for the first kAheadBytes of a stream of `bytes` bytes at `p`: the
// loops ask for the lines kAheadBytes ahead of their reads, so without this
// the first kAheadBytes of every A^T and B^T would come one demand miss
// after another.
ADAPTERD_INLINE void PrefetchHead(const void* p, int64_t bytes) {
  const auto* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < std::min(bytes, kAheadBytes); b += 64) __builtin_prefetch(c + b, 0, 3);
}

using cpu::BF16;
using cpu::F16;
using cpu::F32;
using cpu::LoadBytes;
using cpu::StoreBytes;
using cpu::U16;
using cpu::V16;
using cpu::Vec;

// Lanes of `even` and `odd` interleaved: lo = e0 o0 e1 o1 ... e7 o7,
// hi = e8 o8 ... e15 o15.
ADAPTERD_INLINE void Interleave(V16 even, V16 odd, V16& lo, V16& hi) {
#if defined(__clang__)
  lo = __builtin_shufflevector(even, odd, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  hi = __builtin_shufflevector(even, odd, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
#else
  lo = __builtin_shuffle(even, odd, U16{0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23});
  hi = __builtin_shuffle(even, odd, U16{8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31});
#endif
}

// sums += xi * one row of A^T (the elements at `row`), as C vectors of N
// lanes; bfloat16 as C vectors of N word pairs, even ranks in sums[c][0]
// and odd ones in sums[c][1].
template <class W, int N, int C, class F, int P>
ADAPTERD_INLINE void ShrinkRow(const typename W::T* row, float xi, F (&sums)[C][P]) {
  for (int c = 0; c < C; ++c) {
    if constexpr (std::is_same_v<W, BF16>) {
      F even, odd;
      W::template LoadPairs<N>(row + c * 2 * N, even, odd);
      sums[c][0] += xi * even;
      sums[c][1] += xi * odd;
    } else {
      sums[c][0] += xi * W::template LoadN<N>(row + c * N);
    }
  }
}

// M modules of rank R (8, 16 or 32) over one input, in one pass over x:
// tmp[m * R + k] = scales[m] * sum_i x[i] a_t[m][i * R + k]. A row of A^T
// is C vectors of N lanes (bfloat16: C vectors of N word pairs), and two
// rows are in flight so that no accumulator waits on its own last FMA.
template <class W, int R, int M>
ADAPTERD_INLINE void ShrinkFixed(const float* __restrict x, const void* const* a, int64_t in, const float* scales,
                                 float* __restrict tmp) {
  constexpr bool kPairs = std::is_same_v<W, BF16>;
  constexpr int kLanes = kPairs ? R / 2 : R;  // fp32 lanes per row and half (bfloat16: per parity)
  constexpr int N = std::min(kLanes, 16), C = kLanes / N, P = kPairs ? 2 : 1;
  constexpr int64_t U = 2;
  using F = typename Vec<N>::F;
  const typename W::T* a_t[M];
  for (int m = 0; m < M; ++m) a_t[m] = static_cast<const typename W::T*>(a[m]);
  F acc[M][U][C][P] = {};
  for (int m = 0; m < M; ++m) PrefetchHead(a_t[m], in * static_cast<int64_t>(R * sizeof(typename W::T)));
  // A^T is one short stream per module (a few KiB to tens of KiB): the
  // lines kAheadBytes on are asked for in the loop, since the hardware's
  // prefetcher starts over at each page and each call.
  constexpr int64_t kRowBytes = R * static_cast<int64_t>(sizeof(typename W::T));
  constexpr int64_t kAheadRows = kAheadBytes / kRowBytes;
  int64_t i = 0;
  for (; i + U <= in; i += U) {
    for (int64_t u = 0; u < U; ++u) {
      if (((i + u) * kRowBytes) % 64 < kRowBytes) {  // this row starts a line
        const int64_t ahead = std::min(i + u + kAheadRows, in - 1) * R;
        for (int m = 0; m < M; ++m) {
          const char* const p = reinterpret_cast<const char*>(a_t[m] + ahead);
          for (int64_t b = 0; b < kRowBytes; b += 64) __builtin_prefetch(p + b, 0, 3);
        }
      }
    }
    for (int64_t u = 0; u < U; ++u) {
      for (int m = 0; m < M; ++m) ShrinkRow<W, N, C>(a_t[m] + (i + u) * R, x[i + u], acc[m][u]);
    }
  }
  for (; i < in; ++i) {
    for (int m = 0; m < M; ++m) ShrinkRow<W, N, C>(a_t[m] + i * R, x[i], acc[m][0]);
  }
  for (int m = 0; m < M; ++m) {
    for (int c = 0; c < C; ++c) {
      for (int p = 0; p < P; ++p) {
        F s = acc[m][0][c][p];
        for (int64_t u = 1; u < U; ++u) s += acc[m][u][c][p];
        for (int j = 0; j < N; ++j) tmp[m * R + (c * N + j) * P + p] = s[j] * scales[m];
      }
    }
  }
}

template <class W>
ADAPTERD_INLINE void ShrinkAny(const float* __restrict x, const typename W::T* __restrict a_t, int64_t in,
                               int64_t r, float scale, float* __restrict tmp) {
  std::fill(tmp, tmp + r, 0.0f);
  for (int64_t i = 0; i < in; ++i) {
    const float xi = x[i];
    const typename W::T* row = a_t + i * r;
    for (int64_t k = 0; k < r; ++k) tmp[k] += xi * W::Load(row + k);
  }
  for (int64_t k = 0; k < r; ++k) tmp[k] *= scale;
}

// Returns false where no fixed-size path covers rank r.
template <class W, int M>
ADAPTERD_INLINE bool ShrinkRanked(const float* __restrict x, const void* const* a, int64_t in, int64_t r,
                                  const float* scales, float* __restrict tmp) {
  switch (r) {
    case 8: ShrinkFixed<W, 8, M>(x, a, in, scales, tmp); return true;
    case 16: ShrinkFixed<W, 16, M>(x, a, in, scales, tmp); return true;
    case 32: ShrinkFixed<W, 32, M>(x, a, in, scales, tmp); return true;
    default: return false;
  }
}

template <class W>
ADAPTERD_INLINE void ShrinkMulti(const float* __restrict x, const void* const* a, int64_t count, int64_t in,
                                 int64_t r, const float* scales, float* __restrict tmp) {
  if (count == 2 && ShrinkRanked<W, 2>(x, a, in, r, scales, tmp)) return;
  if (count == 3 && ShrinkRanked<W, 3>(x, a, in, r, scales, tmp)) return;
  for (int64_t m = 0; m < count; ++m) {
    if (!ShrinkRanked<W, 1>(x, a + m, in, r, scales + m, tmp + m * r)) {
      ShrinkAny<W>(x, static_cast<const typename W::T*>(a[m]), in, r, scales[m], tmp + m * r);
    }
  }
}

// y[o] += sum_k tmp[k] b_t[k][o] for the outputs [o0, o0 + 32 * blocks),
// the rank rows taken in order: each row of B^T is read front to back, so
// the whole of B^T (contiguous) is one sequential stream that the hardware
// prefetcher follows (and the loop asks for kAheadBytes on; x86 prefetches
// past the end of B^T never fault), and the sums live in a small buffer in
// L1 until every row has passed. bfloat16 is summed as word pairs (even and
// odd outputs) and interleaved once at the end.
constexpr int64_t kExpandChunk = 2048;  // outputs a pass holds; its sums take 8 KiB

template <class W>
ADAPTERD_INLINE void ExpandChunk(const float* __restrict tmp, const typename W::T* b_t, int64_t r, int64_t out,
                                 int64_t o0, int64_t blocks, float* __restrict y) {
  V16 lo_sums[kExpandChunk / 32], hi_sums[kExpandChunk / 32];
  for (int64_t j = 0; j < blocks; ++j) lo_sums[j] = hi_sums[j] = V16{};
  constexpr int64_t kBlockBytes = 32 * sizeof(typename W::T);
  for (int64_t k = 0; k < r; ++k) {
    const typename W::T* row = b_t + k * out + o0;
    const float t = tmp[k];
    for (int64_t j = 0; j < blocks; ++j) {
      V16 a, b;
      const char* const ahead = reinterpret_cast<const char*>(row + 32 * j) + kAheadBytes;
      for (int64_t line = 0; line < kBlockBytes; line += 64) __builtin_prefetch(ahead + line, 0, 3);
      if constexpr (std::is_same_v<W, BF16>) {
        BF16::LoadPairs<16>(row + 32 * j, a, b);
      } else {
        a = W::template LoadN<16>(row + 32 * j);
        b = W::template LoadN<16>(row + 32 * j + 16);
      }
      lo_sums[j] += t * a;
      hi_sums[j] += t * b;
    }
  }
  for (int64_t j = 0; j < blocks; ++j) {
    V16 lo = lo_sums[j], hi = hi_sums[j];
    if constexpr (std::is_same_v<W, BF16>) Interleave(lo_sums[j], hi_sums[j], lo, hi);
    float* const yo = y + o0 + 32 * j;
    StoreBytes(yo, LoadBytes<V16>(yo) + lo);
    StoreBytes(yo + 16, LoadBytes<V16>(yo + 16) + hi);
  }
}

// The expand over whole blocks of 32 outputs, a chunk at a time; returns
// the outputs done.
template <class W>
ADAPTERD_INLINE int64_t ExpandBlocks(const float* __restrict tmp, const typename W::T* b_t, int64_t r,
                                     int64_t out, float* __restrict y) {
  const int64_t whole = out / 32 * 32;
  for (int64_t o0 = 0; o0 < whole; o0 += kExpandChunk) {
    ExpandChunk<W>(tmp, b_t, r, out, o0, std::min(kExpandChunk, whole - o0) / 32, y);
  }
  return whole;
}

template <class W>
ADAPTERD_INLINE void Expand(const float* __restrict tmp, const void* b, int64_t r, int64_t out,
                            float* __restrict y) {
  const auto* b_t = static_cast<const typename W::T*>(b);
  PrefetchHead(b_t, r * out * static_cast<int64_t>(sizeof(typename W::T)));
  const int64_t done = ExpandBlocks<W>(tmp, b_t, r, out, y);
  for (int64_t o = done; o < out; ++o) {
    float v = 0.0f;
    for (int64_t k = 0; k < r; ++k) v += tmp[k] * W::Load(b_t + k * out + o);
    y[o] += v;
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
      for (int64_t i = 0; i < n; ++i) d[i] = BF16::Round(src[i]);
      return;
    }
  }
}

ADAPTERD_CLONES
void LoraShrinkRow(const float* __restrict x, const void* a_t, LoraWeightType type, int64_t in, int64_t r,
                   float scale, float* __restrict tmp) {
  LoraShrinkRowMulti(x, &a_t, 1, type, in, r, &scale, tmp);
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
void LoraExpandRow(const float* __restrict tmp, const void* b_t, LoraWeightType type, int64_t r, int64_t out,
                   float* __restrict y) {
  switch (type) {
    case LoraWeightType::kF32: return Expand<F32>(tmp, b_t, r, out, y);
    case LoraWeightType::kF16: return Expand<F16>(tmp, b_t, r, out, y);
    case LoraWeightType::kBF16: return Expand<BF16>(tmp, b_t, r, out, y);
  }
}

}  // namespace adapterd::model
