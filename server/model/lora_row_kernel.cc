#include "server/model/lora_row_kernel.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
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

// Whether the CPU runs the AVX-512 clones (x86-64-v4). The shrink keeps
// more sums and builds x's pairs with a 16-lane permute there only, and the
// expand keeps a block's sums side by side: in the other clones GCC holds
// 16-lane vectors in memory and moves them element by element, where the
// earlier forms are faster. The choice is per CPU, so a row's sums still do
// not depend on how many rows share a pass. Tests may override it.
std::atomic<int> wide_override{-1};

bool HasWideVectors() {
  if (const int o = wide_override.load(std::memory_order_relaxed); o >= 0) return o == 1;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  static const bool wide = __builtin_cpu_supports("x86-64-v4");
  return wide;
#else
  return true;
#endif
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

// The accumulators of one shrink: R ranks of one module for one row of x.
// A row of A^T is C vectors of N lanes (bfloat16: C vectors of N word
// pairs, even ranks in one and odd ones in the other: P = 2). Where a row
// of A^T fills half a 16-lane vector (N = 8), two rows of A^T, i and i + 1,
// are read as one vector, row i in lanes [0, 8) and row i + 1 in lanes [8,
// 16): the same sums as two 8-lane accumulators of alternate rows, in half
// the instructions. U sets of accumulators take turns over the rows (where
// packed, over the pairs of rows). With AVX-512 (kWide), U is chosen so
// that a row of x with its M modules keeps about 8 sums in flight: an FMA
// waits on its own accumulator's last one, and two FMA pipes with a latency
// of four cycles need eight independent sums to stay busy (one module alone
// had two). Without, U stays 1 where packed and 2 otherwise (see
// HasWideVectors). U depends on M, not on how many rows of x share the
// pass, so that a row's sums do not either.
template <class W, int R, bool kWide>
struct ShrinkShape {
  static constexpr bool kPairs = std::is_same_v<W, BF16>;
  static constexpr int kLanes = kPairs ? R / 2 : R;  // fp32 lanes per row and half (bfloat16: per parity)
  static constexpr int N = std::min(kLanes, 16), C = kLanes / N, P = kPairs ? 2 : 1;
  static constexpr bool kPacked = N == 8;
  static constexpr int L = kPacked ? 16 : N;  // lanes of an accumulator
  using F = typename Vec<L>::F;
  template <int M>
  static constexpr int U =
      kWide ? std::clamp(std::bit_floor(8u / (M * C * P)), kPacked ? 1u : 2u, 4u) : (kPacked ? 1 : 2);
  static constexpr int kRowsPerSet = kPacked ? 2 : 1;  // rows of A^T an accumulator set takes per turn
  // Rows of x that share one pass over A^T: their accumulators for M
  // modules stay within 24 vector registers.
  template <int M>
  static constexpr int kRows = std::clamp(24 / (M * U<M> * C * P), 1, 4);
};

// The C x P vectors of one row of A^T (kPacked: of rows i and i + 1) at p.
template <class W, int L, class F, int C, int P>
ADAPTERD_INLINE void LoadA(const typename W::T* p, F (&w)[C][P]) {
  for (int c = 0; c < C; ++c) {
    if constexpr (std::is_same_v<W, BF16>) {
      W::template LoadPairs<L>(p + c * 2 * L, w[c][0], w[c][1]);
    } else {
      w[c][0] = W::template LoadN<L>(p + c * L);
    }
  }
}

// x[i] in lanes [0, 8) and x[i + 1] in lanes [8, 16). With AVX-512: the
// pair's 8 bytes broadcast, then one permute (two broadcasts and a shuffle
// took five instructions). Without, GCC lowers that permute of a 16-lane
// vector element by element, so the two 8-lane broadcasts are joined.
template <bool kWide>
ADAPTERD_INLINE V16 PairOf(const float* x) {
  if constexpr (kWide) {
    using Q8 = uint64_t __attribute__((vector_size(64)));
    uint64_t pair;
    std::memcpy(&pair, x, sizeof(pair));
    const V16 pairs = reinterpret_cast<V16>(pair + Q8{});  // x[i], x[i + 1], x[i], ...
    return __builtin_shufflevector(pairs, pairs, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  } else {
    using F8 = Vec<8>::F;
    // x - (+0) is x for every x, -0 included (x + 0 is not): a broadcast.
    const F8 lo = x[0] - F8{}, hi = x[1] - F8{};
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  }
}

// Asks for the line kAheadBytes past row i of each A^T, where row i starts a line.
template <int M>
ADAPTERD_INLINE void PrefetchAhead(const char* const (&a)[M], int64_t i, int64_t in, int64_t row_bytes) {
  if ((i * row_bytes) % 64 >= row_bytes) return;
  const int64_t ahead = std::min(i + kAheadBytes / row_bytes, in - 1) * row_bytes;
  for (int m = 0; m < M; ++m) {
    for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(a[m] + ahead + b, 0, 3);
  }
}

// Adds the products of rows [i, i + S::kRowsPerSet) of each A^T to
// accumulator set u of each of the NR rows of x.
template <class W, int R, bool kWide, int M, int NR, class F, int U, int C, int P>
ADAPTERD_INLINE void ShrinkTurn(const float* __restrict x, int64_t ldx, const typename W::T* const (&a_t)[M],
                                int64_t i, int u, F (&acc)[M][NR][U][C][P]) {
  using S = ShrinkShape<W, R, kWide>;
  // Each row's x pair, shared by the M modules (without AVX-512 built
  // where used: a 16-lane vector is not kept in registers there).
  constexpr bool kHoist = S::kPacked && kWide;
  F pairs[kHoist ? NR : 1];
  if constexpr (kHoist) {
    for (int j = 0; j < NR; ++j) pairs[j] = PairOf<kWide>(x + j * ldx + i);
  }
  for (int m = 0; m < M; ++m) {
    F w[C][P];
    LoadA<W, S::L>(a_t[m] + i * R, w);
    for (int j = 0; j < NR; ++j) {
      if constexpr (kHoist) {
        for (int p = 0; p < P; ++p) acc[m][j][u][0][p] += pairs[j] * w[0][p];
      } else if constexpr (S::kPacked) {
        const F xv = PairOf<kWide>(x + j * ldx + i);
        for (int p = 0; p < P; ++p) acc[m][j][u][0][p] += xv * w[0][p];
      } else {
        const float xi = x[j * ldx + i];
        for (int c = 0; c < C; ++c) {
          for (int p = 0; p < P; ++p) acc[m][j][u][c][p] += xi * w[c][p];
        }
      }
    }
  }
}

// M modules of rank R (8, 16 or 32) over NR rows of x, in one pass over
// each A^T: tmp[j * ldt + m * R + k] = scales[m] * sum_i x[j * ldx + i]
// a_t[m][i * R + k] for j < NR. Each row's sums are those of NR = 1, bit
// for bit: the same products, added in the same order.
template <class W, int R, bool kWide, int M, int NR>
ADAPTERD_INLINE void ShrinkFixed(const float* __restrict x, int64_t ldx, const void* const* a, int64_t in,
                                 const float* scales, float* __restrict tmp, int64_t ldt) {
  using S = ShrinkShape<W, R, kWide>;
  using F = typename S::F;
  constexpr int C = S::C, P = S::P, U = S::template U<M>, kSet = S::kRowsPerSet;
  constexpr int64_t kRowBytes = R * static_cast<int64_t>(sizeof(typename W::T));
  const typename W::T* a_t[M];
  const char* a_bytes[M];
  for (int m = 0; m < M; ++m) {
    a_t[m] = static_cast<const typename W::T*>(a[m]);
    a_bytes[m] = static_cast<const char*>(a[m]);
    PrefetchHead(a_t[m], in * kRowBytes);
  }
  F acc[M][NR][U][C][P] = {};
  int64_t i = 0;
  for (; i + U * kSet <= in; i += U * kSet) {
    for (int k = 0; k < U * kSet; ++k) PrefetchAhead<M>(a_bytes, i + k, in, kRowBytes);
    for (int u = 0; u < U; ++u) ShrinkTurn<W, R, kWide, M, NR>(x, ldx, a_t, i + u * kSet, u, acc);
  }
  // The whole turns left over, one per set.
  for (int u = 0; i + kSet <= in; i += kSet, ++u) ShrinkTurn<W, R, kWide, M, NR>(x, ldx, a_t, i, u, acc);
  using H = typename Vec<S::N>::F;
  for (int m = 0; m < M; ++m) {
    H tail[C][P] = {};  // the odd row of A^T left over where packed, if any
    if (i < in) LoadA<W, S::N>(a_t[m] + i * R, tail);
    for (int j = 0; j < NR; ++j) {
      for (int c = 0; c < C; ++c) {
        for (int p = 0; p < P; ++p) {
          // The sets in order; where packed, the rows in lanes [0, 8) (with
          // the odd row left over), then those in lanes [8, 16).
          F all = acc[m][j][0][c][p];
          for (int u = 1; u < U; ++u) all += acc[m][j][u][c][p];
          H sum;
          if constexpr (S::kPacked) {
            H first, second;
            std::memcpy(&first, &all, sizeof(H));
            std::memcpy(&second, reinterpret_cast<const char*>(&all) + sizeof(H), sizeof(H));
            if (i < in) first += x[j * ldx + i] * tail[c][p];
            sum = first + second;
          } else {
            sum = all;
          }
          for (int l = 0; l < S::N; ++l) tmp[j * ldt + m * R + (c * S::N + l) * P + p] = sum[l] * scales[m];
        }
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

// `rows` rows through ShrinkFixed, kRows at a time.
template <class W, int R, bool kWide, int M>
ADAPTERD_INLINE void ShrinkRowsFixed(const float* __restrict x, int64_t ldx, int64_t rows, const void* const* a,
                                     int64_t in, const float* scales, float* __restrict tmp, int64_t ldt) {
  constexpr int NR = ShrinkShape<W, R, kWide>::template kRows<M>;
  int64_t j = 0;
  if constexpr (NR > 1) {
    for (; j + NR <= rows; j += NR) {
      ShrinkFixed<W, R, kWide, M, NR>(x + j * ldx, ldx, a, in, scales, tmp + j * ldt, ldt);
    }
  }
  for (; j < rows; ++j) ShrinkFixed<W, R, kWide, M, 1>(x + j * ldx, ldx, a, in, scales, tmp + j * ldt, ldt);
}

// Returns false where no fixed-size path covers rank r.
template <class W, bool kWide, int M>
ADAPTERD_INLINE bool ShrinkRanked(const float* __restrict x, int64_t ldx, int64_t rows, const void* const* a,
                                  int64_t in, int64_t r, const float* scales, float* __restrict tmp, int64_t ldt) {
  switch (r) {
    case 8: ShrinkRowsFixed<W, 8, kWide, M>(x, ldx, rows, a, in, scales, tmp, ldt); return true;
    case 16: ShrinkRowsFixed<W, 16, kWide, M>(x, ldx, rows, a, in, scales, tmp, ldt); return true;
    case 32: ShrinkRowsFixed<W, 32, kWide, M>(x, ldx, rows, a, in, scales, tmp, ldt); return true;
    default: return false;
  }
}

template <class W, bool kWide>
ADAPTERD_INLINE void ShrinkMulti(const float* __restrict x, int64_t ldx, int64_t rows, const void* const* a,
                                 int64_t count, int64_t in, int64_t r, const float* scales, float* __restrict tmp,
                                 int64_t ldt) {
  if (count == 2 && ShrinkRanked<W, kWide, 2>(x, ldx, rows, a, in, r, scales, tmp, ldt)) return;
  if (count == 3 && ShrinkRanked<W, kWide, 3>(x, ldx, rows, a, in, r, scales, tmp, ldt)) return;
  for (int64_t m = 0; m < count; ++m) {
    if (ShrinkRanked<W, kWide, 1>(x, ldx, rows, a + m, in, r, scales + m, tmp + m * r, ldt)) continue;
    for (int64_t j = 0; j < rows; ++j) {
      ShrinkAny<W>(x + j * ldx, static_cast<const typename W::T*>(a[m]), in, r, scales[m], tmp + j * ldt + m * r);
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

// The 32 elements of B^T at `row`, in W::Load32's order, asking for the
// lines kAheadBytes on.
template <class W>
ADAPTERD_INLINE void LoadBlock(const typename W::T* row, V16& a, V16& b) {
  const char* const ahead = reinterpret_cast<const char*>(row) + kAheadBytes;
  for (int64_t line = 0; line < 32 * static_cast<int64_t>(sizeof(typename W::T)); line += 64) {
    __builtin_prefetch(ahead + line, 0, 3);
  }
  W::Load32(row, a, b);
}

// yo[0, 32) += the sums of one block, lo and hi in LoadBlock's order.
template <class W>
ADAPTERD_INLINE void AddBlock(V16 lo, V16 hi, float* __restrict yo) {
  if constexpr (std::is_same_v<W, BF16>) Interleave(lo, hi, lo, hi);
  StoreBytes(yo, LoadBytes<V16>(yo) + lo);
  StoreBytes(yo + 16, LoadBytes<V16>(yo + 16) + hi);
}

// Calls add(k, j, t_k * a, t_k * b) for every rank row k of a chunk of B^T
// and each of its `blocks` blocks (a and b in LoadBlock's order), row by
// row, each row front to back.
template <class W, class Add>
ADAPTERD_INLINE void ForEachProduct(const float* __restrict tmp, const typename W::T* b_t, int64_t r, int64_t out,
                                    int64_t o0, int64_t blocks, Add add) {
  for (int64_t k = 0; k < r; ++k) {
    const typename W::T* row = b_t + k * out + o0;
    const float t = tmp[k];
    for (int64_t j = 0; j < blocks; ++j) {
      V16 a, b;
      LoadBlock<W>(row + 32 * j, a, b);
      add(k, j, t * a, t * b);
    }
  }
}

template <class W, bool kWide>
ADAPTERD_INLINE void ExpandChunk(const float* __restrict tmp, const typename W::T* b_t, int64_t r, int64_t out,
                                 int64_t o0, int64_t blocks, float* __restrict y) {
  // With AVX-512, a block's two sums side by side: two arrays would put
  // sums[j]'s halves 4 KiB apart, where a store to one stalls the load of
  // the other; and the first rank row sets the sums, with no pass to zero
  // them (+0 plus the product, as before). Without, GCC moves 16-lane
  // vectors through memory, and the arrays as they were are faster.
  if constexpr (!kWide) {
    V16 lo_sums[kExpandChunk / 32], hi_sums[kExpandChunk / 32];
    for (int64_t j = 0; j < blocks; ++j) lo_sums[j] = hi_sums[j] = V16{};
    ForEachProduct<W>(tmp, b_t, r, out, o0, blocks, [&](int64_t, int64_t j, V16 a, V16 b) ADAPTERD_INLINE_LAMBDA {
      lo_sums[j] += a;
      hi_sums[j] += b;
    });
    for (int64_t j = 0; j < blocks; ++j) AddBlock<W>(lo_sums[j], hi_sums[j], y + o0 + 32 * j);
  } else {
    V16 sums[kExpandChunk / 32][2];
    if (r <= 0) return;  // no row to start the sums
    ForEachProduct<W>(tmp, b_t, r, out, o0, blocks, [&](int64_t k, int64_t j, V16 a, V16 b) ADAPTERD_INLINE_LAMBDA {
      sums[j][0] = (k == 0 ? V16{} : sums[j][0]) + a;
      sums[j][1] = (k == 0 ? V16{} : sums[j][1]) + b;
    });
    for (int64_t j = 0; j < blocks; ++j) AddBlock<W>(sums[j][0], sums[j][1], y + o0 + 32 * j);
  }
}

// The expand over whole blocks of 32 outputs, a chunk at a time; returns
// the outputs done.
template <class W, bool kWide>
ADAPTERD_INLINE int64_t ExpandBlocks(const float* __restrict tmp, const typename W::T* b_t, int64_t r,
                                     int64_t out, float* __restrict y) {
  const int64_t whole = out / 32 * 32;
  for (int64_t o0 = 0; o0 < whole; o0 += kExpandChunk) {
    ExpandChunk<W, kWide>(tmp, b_t, r, out, o0, std::min(kExpandChunk, whole - o0) / 32, y);
  }
  return whole;
}

// The outputs past the last whole block of 32, one at a time.
template <class W>
ADAPTERD_INLINE void ExpandTail(const float* __restrict tmp, const typename W::T* b_t, int64_t r, int64_t out,
                                int64_t done, float* __restrict y) {
  for (int64_t o = done; o < out; ++o) {
    float v = 0.0f;
    for (int64_t k = 0; k < r; ++k) v += tmp[k] * W::Load(b_t + k * out + o);
    y[o] += v;
  }
}

template <class W, bool kWide>
ADAPTERD_INLINE void Expand(const float* __restrict tmp, const void* b, int64_t r, int64_t out,
                            float* __restrict y) {
  const auto* b_t = static_cast<const typename W::T*>(b);
  PrefetchHead(b_t, r * out * static_cast<int64_t>(sizeof(typename W::T)));
  ExpandTail<W>(tmp, b_t, r, out, ExpandBlocks<W, kWide>(tmp, b_t, r, out, y), y);
}

// The expand of NR rows, y[j * ldy + o] += sum_k tmp[j * ldt + k] b_t[k][o],
// a block of 32 outputs at a time with its sums in registers: B^T is read
// once for all NR rows, a column of blocks at a time (the rows of a prompt,
// whose weights the first rows have brought into L2). Each row's sums are
// those of Expand, bit for bit: from zero, k in order, then added to y.
template <class W, int NR>
ADAPTERD_INLINE void ExpandRowsFixed(const float* __restrict tmp, int64_t ldt, const void* b, int64_t r,
                                     int64_t out, float* __restrict y, int64_t ldy) {
  const auto* b_t = static_cast<const typename W::T*>(b);
  PrefetchHead(b_t, r * out * static_cast<int64_t>(sizeof(typename W::T)));
  const int64_t whole = out / 32 * 32;
  for (int64_t o = 0; o < whole; o += 32) {
    V16 lo_sums[NR] = {}, hi_sums[NR] = {};
    for (int64_t k = 0; k < r; ++k) {
      V16 a, b2;
      LoadBlock<W>(b_t + k * out + o, a, b2);
      for (int j = 0; j < NR; ++j) {
        const float t = tmp[j * ldt + k];
        lo_sums[j] += t * a;
        hi_sums[j] += t * b2;
      }
    }
    for (int j = 0; j < NR; ++j) AddBlock<W>(lo_sums[j], hi_sums[j], y + j * ldy + o);
  }
  for (int j = 0; j < NR; ++j) ExpandTail<W>(tmp + j * ldt, b_t, r, out, whole, y + j * ldy);
}

constexpr int64_t kExpandRows = 4;  // rows that share one pass over B^T

template <class W, bool kWide>
ADAPTERD_INLINE void ExpandRows(const float* __restrict tmp, int64_t ldt, int64_t rows, const void* b, int64_t r,
                                int64_t out, float* __restrict y, int64_t ldy) {
  int64_t j = 0;
  for (; j + kExpandRows <= rows; j += kExpandRows) {
    ExpandRowsFixed<W, kExpandRows>(tmp + j * ldt, ldt, b, r, out, y + j * ldy, ldy);
  }
  for (; j < rows; ++j) Expand<W, kWide>(tmp + j * ldt, b, r, out, y + j * ldy);
}

template <class W>
ADAPTERD_INLINE void Widen(const void* src, int64_t n, float* __restrict dst) {
  const auto* s = static_cast<const typename W::T*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = W::Load(s + i);
}

}  // namespace

void LoraRowWideVectorsForTest(int wide) { wide_override.store(wide, std::memory_order_relaxed); }

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

void LoraShrinkRow(const float* __restrict x, const void* a_t, LoraWeightType type, int64_t in, int64_t r,
                   float scale, float* __restrict tmp) {
  LoraShrinkRows(x, in, 1, &a_t, 1, type, in, r, &scale, tmp, r);
}

void LoraShrinkRowMulti(const float* __restrict x, const void* const* a_ts, int64_t count, LoraWeightType type,
                        int64_t in, int64_t r, const float* scales, float* __restrict tmp) {
  LoraShrinkRows(x, in, 1, a_ts, count, type, in, r, scales, tmp, count * r);
}

void LoraExpandRow(const float* __restrict tmp, const void* b_t, LoraWeightType type, int64_t r, int64_t out,
                   float* __restrict y) {
  LoraExpandRows(tmp, r, 1, b_t, type, r, out, y, out);
}

void LoraPrefetchExpand(const void* b_t, LoraWeightType type, int64_t r, int64_t out) {
  PrefetchHead(b_t, r * out * (type == LoraWeightType::kF32 ? 4 : 2));
}

ADAPTERD_CLONES
void LoraShrinkRows(const float* __restrict x, int64_t x_stride, int64_t rows, const void* const* a_ts,
                    int64_t count, LoraWeightType type, int64_t in, int64_t r, const float* scales,
                    float* __restrict tmp, int64_t tmp_stride) {
  const auto run = [&]<bool kWide>() ADAPTERD_INLINE_LAMBDA {
    switch (type) {
      case LoraWeightType::kF32:
        return ShrinkMulti<F32, kWide>(x, x_stride, rows, a_ts, count, in, r, scales, tmp, tmp_stride);
      case LoraWeightType::kF16:
        return ShrinkMulti<F16, kWide>(x, x_stride, rows, a_ts, count, in, r, scales, tmp, tmp_stride);
      case LoraWeightType::kBF16:
        return ShrinkMulti<BF16, kWide>(x, x_stride, rows, a_ts, count, in, r, scales, tmp, tmp_stride);
    }
  };
  if (HasWideVectors()) {
    run.template operator()<true>();
  } else {
    run.template operator()<false>();
  }
}

ADAPTERD_CLONES
void LoraExpandRows(const float* __restrict tmp, int64_t tmp_stride, int64_t rows, const void* b_t,
                    LoraWeightType type, int64_t r, int64_t out, float* __restrict y, int64_t y_stride) {
  const auto run = [&]<bool kWide>() ADAPTERD_INLINE_LAMBDA {
    switch (type) {
      case LoraWeightType::kF32: return ExpandRows<F32, kWide>(tmp, tmp_stride, rows, b_t, r, out, y, y_stride);
      case LoraWeightType::kF16: return ExpandRows<F16, kWide>(tmp, tmp_stride, rows, b_t, r, out, y, y_stride);
      case LoraWeightType::kBF16: return ExpandRows<BF16, kWide>(tmp, tmp_stride, rows, b_t, r, out, y, y_stride);
    }
  };
  if (HasWideVectors()) {
    run.template operator()<true>();
  } else {
    run.template operator()<false>();
  }
}

}  // namespace adapterd::model
