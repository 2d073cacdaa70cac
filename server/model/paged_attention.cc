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

// One row and KV heads [g0, g1) together, for head_dim a multiple of 32.
// Each position's keys (then values) of those heads are adjacent in the
// cache, so the loop reads them in order, one position after the other,
// and asks for the next positions' lines while it sums this one's. Each
// key is read once from memory for all `group` query heads. `scratch` holds
// (g1 - g0) * group * (length + 2 * head_dim + 2) floats.
template <class W>
ADAPTERD_INLINE void RowHeads(const typename W::T* q, const typename W::T* k_cache, const typename W::T* v_cache,
                              const DecodeRow& r, int64_t g0, int64_t g1, int64_t heads, int64_t kv_heads,
                              int64_t hd, int64_t block_size, float scale, typename W::T* out, float* scratch) {
  constexpr int64_t kAhead = 4;  // positions prefetched ahead
  const int64_t group = heads / kv_heads;
  const int64_t nh = (g1 - g0) * group;  // query heads done here, from head g0 * group
  const int64_t chunks = hd / 32;
  const int64_t n = r.length;
  float* scores = scratch;           // [nh, n]
  float* qf = scores + nh * n;       // [nh, hd], in Load32's order
  float* acc = qf + nh * hd;         // [nh, hd], likewise
  float* maxes = acc + nh * hd;      // [nh]
  float* sums = maxes + nh;          // [nh]
  const V16 vscale = V16{} + scale;
  for (int64_t j = 0; j < nh; ++j) {
    const typename W::T* qh = q + (r.row * heads + g0 * group + j) * hd;
    for (int64_t c = 0; c < chunks; ++c) {
      V16 a, b;
      W::Load32(qh + 32 * c, a, b);
      cpu::StoreBytes(qf + j * hd + 32 * c, a * vscale);
      cpu::StoreBytes(qf + j * hd + 32 * c + 16, b * vscale);
    }
    maxes[j] = -std::numeric_limits<float>::infinity();
  }
  std::fill(acc, acc + nh * hd, 0.0f);
  const std::vector<int32_t>& table = *r.block_table;
  const int64_t span = (g1 - g0) * hd;  // elements of one position's heads
  for (int64_t p = 0; p < n; ++p) {
    if (p + kAhead < n) Prefetch(k_cache + (Slot(table, p + kAhead, block_size) * kv_heads + g0) * hd,
                                 span * static_cast<int64_t>(sizeof(typename W::T)));
    const typename W::T* k = k_cache + (Slot(table, p, block_size) * kv_heads + g0) * hd;
    for (int64_t j = 0; j < nh; ++j) {
      const typename W::T* kh = k + (j / group) * hd;
      const float* qj = qf + j * hd;
      V16 s{};
      for (int64_t c = 0; c < chunks; ++c) {
        V16 a, b;
        W::Load32(kh + 32 * c, a, b);
        s += a * cpu::LoadBytes<V16>(qj + 32 * c) + b * cpu::LoadBytes<V16>(qj + 32 * c + 16);
      }
      const float dot = Sum(s);
      scores[j * n + p] = dot;
      maxes[j] = std::max(maxes[j], dot);
    }
  }
  Softmax(scores, maxes, sums, nh, n);
  for (int64_t p = 0; p < n; ++p) {
    if (p + kAhead < n) Prefetch(v_cache + (Slot(table, p + kAhead, block_size) * kv_heads + g0) * hd,
                                 span * static_cast<int64_t>(sizeof(typename W::T)));
    const typename W::T* v = v_cache + (Slot(table, p, block_size) * kv_heads + g0) * hd;
    for (int64_t j = 0; j < nh; ++j) {
      const typename W::T* vh = v + (j / group) * hd;
      const V16 w = V16{} + scores[j * n + p];
      float* aj = acc + j * hd;
      for (int64_t c = 0; c < chunks; ++c) {
        V16 a, b;
        W::Load32(vh + 32 * c, a, b);
        cpu::StoreBytes(aj + 32 * c, cpu::LoadBytes<V16>(aj + 32 * c) + w * a);
        cpu::StoreBytes(aj + 32 * c + 16, cpu::LoadBytes<V16>(aj + 32 * c + 16) + w * b);
      }
    }
  }
  for (int64_t j = 0; j < nh; ++j) {
    typename W::T* o = out + (r.row * heads + g0 * group + j) * hd;
    const float inv = 1.0f / sums[j];
    for (int64_t c = 0; c < chunks; ++c) {
      for (int half = 0; half < 2; ++half) {
        for (int l = 0; l < kLanes; ++l) {
          o[32 * c + W::Element(half, l)] = W::Round(acc[j * hd + 32 * c + 16 * half + l] * inv);
        }
      }
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
  for (int64_t i = begin; i < end;) {
    const DecodeRow& r = rows[static_cast<size_t>(i / kv_heads)];
    const int64_t g0 = i % kv_heads;
    if (hd % 32 != 0) {
      scratch.resize(static_cast<size_t>(group * (r.length + 2 * hd + 2)));
      RowHead<W>(qp, kp, vp, r, g0, heads, kv_heads, hd, block_size, scale, op, scratch.data());
      ++i;
      continue;
    }
    // This row's KV heads that fall in [begin, end), together.
    const int64_t g1 = std::min(kv_heads, g0 + (end - i));
    scratch.resize(static_cast<size_t>((g1 - g0) * group * (r.length + 2 * hd + 2)));
    RowHeads<W>(qp, kp, vp, r, g0, g1, heads, kv_heads, hd, block_size, scale, op, scratch.data());
    i += g1 - g0;
  }
}

}  // namespace

// Items [begin, end) of the flattened (row, KV head) work list; the loop
// that is cloned per instruction set (cpu_clones.h). Where head_dim is a
// multiple of 32, a row's KV heads in the range go together in vectors of
// 16 lanes (RowHeads); elsewhere one KV head at a time, with dot products
// in 16 independent partial sums (RowHead).
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
    std::vector<float> scratch;
    PagedAttentionRange(type, qp, kp, vp, rows, begin, end, heads, kv_heads, hd, block_size,
                        static_cast<float>(scale), op, scratch);
  });
}

}  // namespace adapterd::model
