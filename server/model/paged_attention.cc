#include "server/model/paged_attention.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "server/common/parallel.h"
#include "server/model/cpu_clones.h"

namespace adapterd::model {


enum class CacheType { kF32, kBF16, kF16 };

namespace {

struct F32 {
  using T = float;
  static ADAPTERD_INLINE float Load(const T* p) { return *p; }
  static ADAPTERD_INLINE void Store(T* p, float v) { *p = v; }
};
struct BF16 {
  using T = uint16_t;
  static ADAPTERD_INLINE float Load(const T* p) { return std::bit_cast<float>(static_cast<uint32_t>(*p) << 16); }
  static ADAPTERD_INLINE void Store(T* p, float v) { *reinterpret_cast<c10::BFloat16*>(p) = c10::BFloat16(v); }
};
struct F16 {
  using T = _Float16;
  static ADAPTERD_INLINE float Load(const T* p) { return static_cast<float>(*p); }
  static ADAPTERD_INLINE void Store(T* p, float v) { *p = static_cast<_Float16>(v); }
};

constexpr int kLanes = 16;

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

// One row and one KV head: the `group` query heads that read it. `scratch`
// holds group * (length + 2 * head_dim + 2) floats.
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
    sums[j] = 0;
  }
  std::fill(acc, acc + group * hd, 0.0f);
  const std::vector<int32_t>& table = *r.block_table;
  for (int64_t p = 0; p < n; ++p) {
    const int64_t slot = static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
    const typename W::T* k = k_cache + (slot * kv_heads + g) * hd;
    for (int64_t j = 0; j < group; ++j) {
      const float s = Dot<W>(qf + j * hd, k, hd);
      scores[j * n + p] = s;
      maxes[j] = std::max(maxes[j], s);
    }
  }
  for (int64_t j = 0; j < group; ++j) {
    for (int64_t p = 0; p < n; ++p) {
      const float e = std::exp(scores[j * n + p] - maxes[j]);
      scores[j * n + p] = e;
      sums[j] += e;
    }
  }
  for (int64_t p = 0; p < n; ++p) {
    const int64_t slot = static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
    const typename W::T* v = v_cache + (slot * kv_heads + g) * hd;
    for (int64_t j = 0; j < group; ++j) Axpy<W>(scores[j * n + p], v, acc + j * hd, hd);
  }
  for (int64_t j = 0; j < group; ++j) {
    typename W::T* o = out + (r.row * heads + g * group + j) * hd;
    const float inv = 1.0f / sums[j];
    for (int64_t d = 0; d < hd; ++d) W::Store(o + d, acc[j * hd + d] * inv);
  }
}

}  // namespace

// Rows [begin, end) of the flattened (row, KV head) work list; the loop
// that is cloned per instruction set (cpu_clones.h). Dot products keep 16
// independent partial sums, so they vectorise without reassociating one sum.
void PagedAttentionRange(CacheType type, const void* q, const void* k_cache, const void* v_cache,
                         std::span<const DecodeRow> rows, int64_t begin, int64_t end, int64_t heads,
                         int64_t kv_heads, int64_t hd, int64_t block_size, float scale, void* out,
                         std::vector<float>& scratch);
ADAPTERD_CLONES
void PagedAttentionRange(CacheType type, const void* q, const void* k_cache, const void* v_cache,
                         std::span<const DecodeRow> rows, int64_t begin, int64_t end, int64_t heads,
                         int64_t kv_heads, int64_t hd, int64_t block_size, float scale, void* out,
                         std::vector<float>& scratch) {
  const int64_t group = heads / kv_heads;
  for (int64_t i = begin; i < end; ++i) {
    const DecodeRow& r = rows[static_cast<size_t>(i / kv_heads)];
    scratch.resize(static_cast<size_t>(group * (r.length + 2 * hd + 2)));
    const int64_t g = i % kv_heads;
    switch (type) {
      case CacheType::kF32:
        RowHead<F32>(static_cast<const float*>(q), static_cast<const float*>(k_cache),
                     static_cast<const float*>(v_cache), r, g, heads, kv_heads, hd, block_size, scale,
                     static_cast<float*>(out), scratch.data());
        break;
      case CacheType::kBF16:
        RowHead<BF16>(static_cast<const uint16_t*>(q), static_cast<const uint16_t*>(k_cache),
                      static_cast<const uint16_t*>(v_cache), r, g, heads, kv_heads, hd, block_size, scale,
                      static_cast<uint16_t*>(out), scratch.data());
        break;
      case CacheType::kF16:
        RowHead<F16>(static_cast<const _Float16*>(q), static_cast<const _Float16*>(k_cache),
                     static_cast<const _Float16*>(v_cache), r, g, heads, kv_heads, hd, block_size, scale,
                     static_cast<_Float16*>(out), scratch.data());
        break;
    }
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
