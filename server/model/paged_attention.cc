#include "server/model/paged_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "server/common/parallel.h"
#include "server/model/cpu_clones.h"
#include "server/model/cpu_vec.h"

namespace adapterd::model {


enum class CacheType { kF32, kBF16, kF16 };

namespace {

using cpu::V16;

// Element types as cpu_vec.h reads them: the vector loop reads queries,
// keys and values with Load32, whose order does not matter to a dot product
// as long as both sides share it, and stores its sums through Element().
using cpu::BF16;
using cpu::F16;
using cpu::F32;

constexpr int kLanes = 16;

// The sum of v's lanes, pairwise (a fixed order, whatever the clone).
ADAPTERD_INLINE float Sum(V16 v) {
  using V8 = cpu::Vec<8>::F;
  using V4 = cpu::Vec<4>::F;
  const V8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 f = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  return (f[0] + f[2]) + (f[1] + f[3]);
}

template <class W>
ADAPTERD_INLINE float Dot(const float* __restrict q, const typename W::T* __restrict k, int64_t n) {
  float acc[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += q[d + l] * W::Load(k + d + l);
  }
  float s = 0;
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  for (; d < n; ++d) s += q[d] * W::Load(k + d);
  return s;
}

template <class W>
ADAPTERD_INLINE void Axpy(float w, const typename W::T* __restrict v, float* __restrict a, int64_t n) {
  for (int64_t d = 0; d < n; ++d) a[d] += w * W::Load(v + d);
}

// Where position p of a row's context sits in the cache, in slots.
ADAPTERD_INLINE int64_t Slot(const std::vector<int32_t>& table, int64_t p, int64_t block_size) {
  return static_cast<int64_t>(table[static_cast<size_t>(p / block_size)]) * block_size + p % block_size;
}

// The sums of 16 vectors' lanes, as one vector: lane i holds the sum of
// v[i]'s lanes. Four rounds each halve the vectors and the lanes they
// still hold, adding two vectors' halves side by side; a last shuffle puts
// the sums in order. 46 vector operations where 16 Sum() calls take ~150.
ADAPTERD_INLINE V16 Sums16(const V16* v) {
  V16 w[8], x[4], y[2];
  for (int i = 0; i < 8; ++i) {
    w[i] = __builtin_shufflevector(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(v[2 * i], v[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30,
                                   31);
  }
  // w[i]: lanes 0-7 partial sums of v[2i], lanes 8-15 of v[2i+1].
  for (int i = 0; i < 4; ++i) {
    x[i] = __builtin_shufflevector(w[2 * i], w[2 * i + 1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) +
           __builtin_shufflevector(w[2 * i], w[2 * i + 1], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  }
  // x[i]: four lanes each of v[4i], v[4i+2], v[4i+1], v[4i+3].
  for (int i = 0; i < 2; ++i) {
    y[i] = __builtin_shufflevector(x[2 * i], x[2 * i + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
           __builtin_shufflevector(x[2 * i], x[2 * i + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  }
  // y[i]: two lanes each of v[8i], v[8i+4], v[8i+2], v[8i+6], v[8i+1],
  // v[8i+5], v[8i+3], v[8i+7].
  const V16 z = __builtin_shufflevector(y[0], y[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
                __builtin_shufflevector(y[0], y[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  // z: v0, v8, v4, v12, v2, v10, v6, v14, v1, v9, v5, v13, v3, v11, v7, v15.
  return __builtin_shufflevector(z, z, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
}

// Exponentiates each row of scores [rows, n] against its maximum, 16 lanes
// at a time, and returns the sums in `sums`.
ADAPTERD_INLINE void Softmax(float* scores, const float* maxes, float* sums, int64_t rows, int64_t n) {
  for (int64_t j = 0; j < rows; ++j) {
    float* s = scores + j * n;
    V16 vsum{};
    int64_t p = 0;
    for (; p + kLanes <= n; p += kLanes) {
      const V16 e = cpu::Exp(cpu::LoadBytes<V16>(s + p) - maxes[j]);
      cpu::StoreBytes(s + p, e);
      vsum += e;
    }
    float sum = Sum(vsum);
    for (; p < n; ++p) {
      s[p] = std::exp(s[p] - maxes[j]);
      sum += s[p];
    }
    sums[j] = sum;
  }
}

// One row and one KV head: the `group` query heads that read it, for any
// head_dim. `scratch` holds group * (length + 2 * head_dim + 2) floats.
template <class W>
ADAPTERD_INLINE void RowHead(const typename W::T* q, const typename W::T* k_cache, const typename W::T* v_cache,
                             const DecodeRow& r, int64_t g, int64_t heads, int64_t kv_heads, int64_t hd,
                             int64_t block_size, float scale, typename W::T* out, float* scratch) {
  const int64_t group = heads / kv_heads;
  const int64_t n = r.length;
  float* scores = scratch;             // [group, n]
  float* qf = scores + group * n;      // [group, hd]
  float* acc = qf + group * hd;        // [group, hd]
  float* maxes = acc + group * hd;     // [group]
  float* sums = maxes + group;         // [group]
  for (int64_t j = 0; j < group; ++j) {
    const typename W::T* qh = q + (r.row * heads + g * group + j) * hd;
    for (int64_t d = 0; d < hd; ++d) qf[j * hd + d] = W::Load(qh + d) * scale;
    maxes[j] = -std::numeric_limits<float>::infinity();
  }
  std::fill(acc, acc + group * hd, 0.0f);
  const std::vector<int32_t>& table = *r.block_table;
  for (int64_t p = 0; p < n; ++p) {
    const typename W::T* k = k_cache + (Slot(table, p, block_size) * kv_heads + g) * hd;
    for (int64_t j = 0; j < group; ++j) {
      const float s = Dot<W>(qf + j * hd, k, hd);
      scores[j * n + p] = s;
      maxes[j] = std::max(maxes[j], s);
    }
  }
  Softmax(scores, maxes, sums, group, n);
  for (int64_t p = 0; p < n; ++p) {
    const typename W::T* v = v_cache + (Slot(table, p, block_size) * kv_heads + g) * hd;
    for (int64_t j = 0; j < group; ++j) Axpy<W>(scores[j * n + p], v, acc + j * hd, hd);
  }
  for (int64_t j = 0; j < group; ++j) {
    typename W::T* o = out + (r.row * heads + g * group + j) * hd;
    const float inv = 1.0f / sums[j];
    for (int64_t d = 0; d < hd; ++d) o[d] = W::Round(acc[j * hd + d] * inv);
  }
}

// Asks for the cache lines of `bytes` at p, ahead of their use.
ADAPTERD_INLINE void Prefetch(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 0, 3);
}

// Query heads held in registers at once for head_dim = 32 * kChunks: their
// queries (scores) or sums (values), and one position's key or value, fit
// AVX-512's 32 registers.
template <int kChunks>
constexpr int kTile = kChunks >= 8 ? 1 : 8 / kChunks;

// Positions a row's KV heads take in turn: a span's keys or values of all
// the row's KV heads stay in the L2 cache while each head reads its own.
constexpr int64_t kSpan = 64;
static_assert(kSpan % kLanes == 0, "spans start on 16-position blocks");
constexpr int64_t kAhead = 8;  // positions prefetched ahead

// Where one row's tiles read: its block table, and KV head g of the cache.
template <class W>
struct RowView {
  const typename W::T* cache;
  const std::vector<int32_t>* table;
  int64_t g, kv_heads, hd, block_size;
  ADAPTERD_INLINE const typename W::T* At(int64_t p) const {
    return cache + (Slot(*table, p, block_size) * kv_heads + g) * hd;
  }
  // Position p's 32 * kChunks elements into 2 * kChunks vectors (Load32's
  // order), first asking for the lines of `ahead` elements kAhead
  // positions on (of n).
  template <int kChunks>
  ADAPTERD_INLINE void Read(int64_t p, int64_t n, int64_t ahead, V16* out) const {
    if (p + kAhead < n) Prefetch(At(p + kAhead), ahead * static_cast<int64_t>(sizeof(typename W::T)));
    const typename W::T* x = At(p);
#pragma GCC unroll 8
    for (int c = 0; c < kChunks; ++c) W::Load32(x + 32 * c, out[2 * c], out[2 * c + 1]);
  }
};

// Scores of `th` query heads (queries at q, head after head) against the
// keys at positions [p0, p1), p0 a multiple of 16, into scores[t * n + p];
// maxes[t] takes their maximum. Each key is read once for the tile, and
// each 16 positions' dot products are summed together (Sums16). The lines
// of `ahead` elements from a later position's key are asked for on the
// way: the first tile of a span asks for all the row's KV heads there, so
// that the other heads' tiles find them in the cache.
template <class W, int kChunks>
ADAPTERD_INLINE void TileScores(const typename W::T* q, int th, float scale, const RowView<W>& keys, int64_t p0,
                                int64_t p1, int64_t n, int64_t ahead, float* scores, float* maxes) {
  constexpr int kTh = kTile<kChunks>;
  constexpr int kVecs = 2 * kChunks;  // 16-lane vectors per head
  constexpr int64_t hd = 32 * kChunks;
  V16 qv[kTh][kVecs] = {};
  V16 vmax[kTh];
#pragma GCC unroll 8
  for (int t = 0; t < kTh; ++t) {
    vmax[t] = V16{} - std::numeric_limits<float>::infinity();
    if (t >= th) continue;
#pragma GCC unroll 8
    for (int c = 0; c < kChunks; ++c) {
      W::Load32(q + t * hd + 32 * c, qv[t][2 * c], qv[t][2 * c + 1]);
      qv[t][2 * c] *= scale;
      qv[t][2 * c + 1] *= scale;
    }
  }
  const int64_t n16 = n - n % kLanes;
  V16 part[kTh][kLanes];
  for (int64_t p = p0; p < p1; ++p) {
    V16 kv[kVecs];
    keys.template Read<kChunks>(p, n, ahead, kv);
    const int64_t i = p % kLanes;
#pragma GCC unroll 8
    for (int t = 0; t < kTh; ++t) {
      if (t >= th) continue;
      V16 s = kv[0] * qv[t][0];
#pragma GCC unroll 16
      for (int c = 1; c < kVecs; ++c) s += kv[c] * qv[t][c];
      if (p < n16) {
        part[t][i] = s;
        if (i == kLanes - 1) {
          const V16 sums16 = Sums16(part[t]);
          cpu::StoreBytes(scores + t * n + p - i, sums16);
          vmax[t] = vmax[t] > sums16 ? vmax[t] : sums16;
        }
      } else {
        const float dot = Sum(s);
        scores[t * n + p] = dot;
        maxes[t] = std::max(maxes[t], dot);
      }
    }
  }
  for (int t = 0; t < th; ++t) {
    for (int l = 0; l < kLanes; ++l) maxes[t] = std::max(maxes[t], vmax[t][l]);
  }
}

// acc[t * hd ...] (in Load32's order) += scores[t * n + p] * value(p) for
// `th` heads over positions [p0, p1); the sums stay in registers meanwhile.
template <class W, int kChunks>
ADAPTERD_INLINE void TileValues(int th, const RowView<W>& values, int64_t p0, int64_t p1, int64_t n, int64_t ahead,
                                const float* scores, float* acc) {
  constexpr int kTh = kTile<kChunks>;
  constexpr int kVecs = 2 * kChunks;
  constexpr int64_t hd = 32 * kChunks;
  V16 a[kTh][kVecs] = {};
#pragma GCC unroll 8
  for (int t = 0; t < kTh; ++t) {
    if (t >= th) continue;
#pragma GCC unroll 16
    for (int c = 0; c < kVecs; ++c) a[t][c] = cpu::LoadBytes<V16>(acc + t * hd + kLanes * c);
  }
  for (int64_t p = p0; p < p1; ++p) {
    V16 vv[kVecs];
    values.template Read<kChunks>(p, n, ahead, vv);
#pragma GCC unroll 8
    for (int t = 0; t < kTh; ++t) {
      if (t >= th) continue;
      const V16 w = V16{} + scores[t * n + p];
#pragma GCC unroll 16
      for (int c = 0; c < kVecs; ++c) a[t][c] += w * vv[c];
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kTh; ++t) {
    if (t >= th) continue;
#pragma GCC unroll 16
    for (int c = 0; c < kVecs; ++c) cpu::StoreBytes(acc + t * hd + kLanes * c, a[t][c]);
  }
}

// Calls fn(g, j, th, p0, p1, ahead) for each span [p0, p1) of a context of
// n positions, each KV head g in [g0, g1) and each tile of th <= kTh of its
// query heads, from head j (counted from g0's first); `ahead` is how far
// the tile's reads should be prefetched.
template <int kTh, class Fn>
ADAPTERD_INLINE void ForEachTile(int64_t n, int64_t g0, int64_t g1, int64_t group, int64_t hd, Fn&& fn) {
  for (int64_t p0 = 0; p0 < n; p0 += kSpan) {
    const int64_t p1 = std::min(n, p0 + kSpan);
    for (int64_t g = g0; g < g1; ++g) {
      for (int64_t j = (g - g0) * group; j < (g - g0 + 1) * group; j += kTh) {
        const int th = static_cast<int>(std::min<int64_t>(kTh, (g - g0 + 1) * group - j));
        fn(g, j, th, p0, p1, j == 0 ? (g1 - g0) * hd : hd);
      }
    }
  }
}

// One row and its KV heads [g0, g1), for head_dim = 32 * kChunks. The
// context is read in spans of kSpan positions; within a span each KV head's
// query heads go in register tiles of kTile (TileScores, then, after one
// softmax over the whole context, TileValues). `scratch` holds
// (g1 - g0) * group * (length + head_dim + 2) floats.
template <class W, int kChunks>
ADAPTERD_INLINE void RowHeads(const typename W::T* q, const typename W::T* k_cache, const typename W::T* v_cache,
                              const DecodeRow& r, int64_t g0, int64_t g1, int64_t heads, int64_t kv_heads,
                              int64_t block_size, float scale, typename W::T* out, float* scratch) {
  constexpr int kTh = kTile<kChunks>;
  constexpr int64_t hd = 32 * kChunks;
  const int64_t group = heads / kv_heads;
  const int64_t nh = (g1 - g0) * group;  // query heads done here, from head g0 * group
  const int64_t n = r.length;
  float* scores = scratch;          // [nh, n]
  float* acc = scores + nh * n;     // [nh, hd], in Load32's order
  float* maxes = acc + nh * hd;     // [nh]
  float* sums = maxes + nh;         // [nh]
  std::fill(maxes, maxes + nh, -std::numeric_limits<float>::infinity());
  std::fill(acc, acc + nh * hd, 0.0f);
  const typename W::T* q0 = q + (r.row * heads + g0 * group) * hd;
  auto tile_scores = [&](int64_t g, int64_t j, int th, int64_t p0, int64_t p1, int64_t ahead)
                         ADAPTERD_INLINE_LAMBDA {
    const RowView<W> keys{k_cache, r.block_table, g, kv_heads, hd, block_size};
    TileScores<W, kChunks>(q0 + j * hd, th, scale, keys, p0, p1, n, ahead, scores + j * n, maxes + j);
  };
  auto tile_values = [&](int64_t g, int64_t j, int th, int64_t p0, int64_t p1, int64_t ahead)
                         ADAPTERD_INLINE_LAMBDA {
    const RowView<W> values{v_cache, r.block_table, g, kv_heads, hd, block_size};
    TileValues<W, kChunks>(th, values, p0, p1, n, ahead, scores + j * n, acc + j * hd);
  };
  ForEachTile<kTh>(n, g0, g1, group, hd, tile_scores);
  Softmax(scores, maxes, sums, nh, n);
  ForEachTile<kTh>(n, g0, g1, group, hd, tile_values);
  typename W::T* o = out + (r.row * heads + g0 * group) * hd;
  for (int64_t j = 0; j < nh; ++j) {
    const float inv = 1.0f / sums[j];
    for (int c = 0; c < kChunks; ++c) {
      W::Store32(o + j * hd + 32 * c, cpu::LoadBytes<V16>(acc + j * hd + 32 * c) * inv,
                 cpu::LoadBytes<V16>(acc + j * hd + 32 * c + kLanes) * inv);
    }
  }
}

template <class W>
ADAPTERD_INLINE void Range(const void* q, const void* k_cache, const void* v_cache, std::span<const DecodeRow> rows,
                           int64_t begin, int64_t end, int64_t heads, int64_t kv_heads, int64_t hd,
                           int64_t block_size, float scale, void* out, std::vector<float>& scratch) {
  using T = typename W::T;
  const T* qp = static_cast<const T*>(q);
  const T* kp = static_cast<const T*>(k_cache);
  const T* vp = static_cast<const T*>(v_cache);
  T* op = static_cast<T*>(out);
  const int64_t group = heads / kv_heads;
  const int64_t chunks = hd % 32 == 0 ? hd / 32 : 0;
  for (int64_t i = begin; i < end;) {
    const DecodeRow& r = rows[static_cast<size_t>(i / kv_heads)];
    const int64_t g0 = i % kv_heads;
    // This row's KV heads that fall in [begin, end), together; one at a
    // time for the generic loop.
    const int64_t g1 = chunks >= 1 && chunks <= 4 ? std::min(kv_heads, g0 + (end - i)) : g0 + 1;
    const size_t need = static_cast<size_t>((g1 - g0) * group * (r.length + 2 * hd + 2));
    if (scratch.size() < need) scratch.resize(need);
    float* s = scratch.data();
    switch (chunks) {
      case 1:
        RowHeads<W, 1>(qp, kp, vp, r, g0, g1, heads, kv_heads, block_size, scale, op, s);
        break;
      case 2:
        RowHeads<W, 2>(qp, kp, vp, r, g0, g1, heads, kv_heads, block_size, scale, op, s);
        break;
      case 3:
        RowHeads<W, 3>(qp, kp, vp, r, g0, g1, heads, kv_heads, block_size, scale, op, s);
        break;
      case 4:
        RowHeads<W, 4>(qp, kp, vp, r, g0, g1, heads, kv_heads, block_size, scale, op, s);
        break;
      default:
        RowHead<W>(qp, kp, vp, r, g0, heads, kv_heads, hd, block_size, scale, op, s);
    }
    i += g1 - g0;
  }
}

}  // namespace

// Items [begin, end) of the flattened (row, KV head) work list; the loop
// that is cloned per instruction set (cpu_clones.h). Head sizes 32, 64, 96
// and 128 take the register-tiled loops (RowHeads); others the generic one,
// with dot products in 16 independent partial sums (RowHead).
void PagedAttentionRange(CacheType type, const void* q, const void* k_cache, const void* v_cache,
                         std::span<const DecodeRow> rows, int64_t begin, int64_t end, int64_t heads,
                         int64_t kv_heads, int64_t hd, int64_t block_size, float scale, void* out,
                         std::vector<float>& scratch);
ADAPTERD_CLONES
void PagedAttentionRange(CacheType type, const void* q, const void* k_cache, const void* v_cache,
                         std::span<const DecodeRow> rows, int64_t begin, int64_t end, int64_t heads,
                         int64_t kv_heads, int64_t hd, int64_t block_size, float scale, void* out,
                         std::vector<float>& scratch) {
  switch (type) {
    case CacheType::kF32:
      Range<F32>(q, k_cache, v_cache, rows, begin, end, heads, kv_heads, hd, block_size, scale, out, scratch);
      break;
    case CacheType::kBF16:
      Range<BF16>(q, k_cache, v_cache, rows, begin, end, heads, kv_heads, hd, block_size, scale, out, scratch);
      break;
    case CacheType::kF16:
      Range<F16>(q, k_cache, v_cache, rows, begin, end, heads, kv_heads, hd, block_size, scale, out, scratch);
      break;
  }
}

bool PagedAttentionSupports(const at::Tensor& cache) {
  const at::ScalarType t = cache.scalar_type();
  return cache.device().is_cpu() && (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf);
}

void PagedDecodeAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                          std::span<const DecodeRow> rows, int64_t block_size, double scale, at::Tensor& out) {
  TORCH_CHECK(q.is_contiguous() && out.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(),
              "paged attention needs contiguous tensors");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type() && q.scalar_type() == out.scalar_type() &&
                  q.scalar_type() == v_cache.scalar_type(),
              "paged attention needs one dtype");
  TORCH_CHECK(PagedAttentionSupports(k_cache), "paged attention supports float32, bfloat16 and float16 on the CPU");
  TORCH_CHECK(q.size(1) % k_cache.size(1) == 0, "query heads must be a multiple of KV heads");
  if (rows.empty()) return;
  const CacheType type = q.scalar_type() == at::kFloat      ? CacheType::kF32
                         : q.scalar_type() == at::kBFloat16 ? CacheType::kBF16
                                                            : CacheType::kF16;
  const int64_t heads = q.size(1), hd = q.size(2), kv_heads = k_cache.size(1);
  const void* qp = q.data_ptr();
  const void* kp = k_cache.data_ptr();
  const void* vp = v_cache.data_ptr();
  void* op = out.data_ptr();
  const int64_t work = static_cast<int64_t>(rows.size()) * kv_heads;
  // Threads only where the step reads enough of the cache to pay for waking
  // them: one short row is microseconds of work.
  constexpr int64_t kElementsPerThread = int64_t{1} << 16;
  int64_t context = 0;
  for (const DecodeRow& r : rows) context += r.length;
  const int64_t per_item = std::max<int64_t>(1, context * heads * hd / work);
  const int64_t grain = std::max<int64_t>(1, kElementsPerThread / per_item);
  at::parallel_for(0, work, grain, [&](int64_t begin, int64_t end) {
    // Grown to the longest context a thread has seen, then reused.
    thread_local std::vector<float> scratch;
    PagedAttentionRange(type, qp, kp, vp, rows, begin, end, heads, kv_heads, hd, block_size,
                        static_cast<float>(scale), op, scratch);
  });
}

}  // namespace adapterd::model
