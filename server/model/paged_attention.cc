#include "server/model/paged_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace adapterd::model {
namespace {

inline float ToFloat(float x) { return x; }
inline float ToFloat(c10::BFloat16 x) { return static_cast<float>(x); }

// One row and one KV head: the `group` query heads that read it.
template <typename T>
void RowHead(const T* q, const T* k_cache, const T* v_cache, const DecodeRow& r, int64_t g, int64_t heads,
             int64_t kv_heads, int64_t hd, int64_t block_size, float scale, T* out, std::vector<float>& scores,
             std::vector<float>& qf, std::vector<float>& acc) {
  const int64_t group = heads / kv_heads;
  const int64_t n = r.length;
  scores.resize(static_cast<size_t>(group * n));
  qf.resize(static_cast<size_t>(group * hd));
  acc.assign(static_cast<size_t>(group * hd), 0.0f);
  for (int64_t j = 0; j < group; ++j) {
    const T* qh = q + (r.row * heads + g * group + j) * hd;
    for (int64_t d = 0; d < hd; ++d) qf[j * hd + d] = ToFloat(qh[d]) * scale;
  }
  const std::vector<int32_t>& table = *r.block_table;
  std::vector<float> maxes(static_cast<size_t>(group), -std::numeric_limits<float>::infinity());
  for (int64_t p = 0; p < n; ++p) {
    const int64_t slot = static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
    const T* k = k_cache + (slot * kv_heads + g) * hd;
    for (int64_t j = 0; j < group; ++j) {
      const float* qj = qf.data() + j * hd;
      float s = 0;
      for (int64_t d = 0; d < hd; ++d) s += qj[d] * ToFloat(k[d]);
      scores[j * n + p] = s;
      maxes[j] = std::max(maxes[j], s);
    }
  }
  std::vector<float> sums(static_cast<size_t>(group), 0.0f);
  for (int64_t j = 0; j < group; ++j) {
    for (int64_t p = 0; p < n; ++p) {
      const float e = std::exp(scores[j * n + p] - maxes[j]);
      scores[j * n + p] = e;
      sums[j] += e;
    }
  }
  for (int64_t p = 0; p < n; ++p) {
    const int64_t slot = static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
    const T* v = v_cache + (slot * kv_heads + g) * hd;
    for (int64_t j = 0; j < group; ++j) {
      const float w = scores[j * n + p];
      float* a = acc.data() + j * hd;
      for (int64_t d = 0; d < hd; ++d) a[d] += w * ToFloat(v[d]);
    }
  }
  for (int64_t j = 0; j < group; ++j) {
    T* o = out + (r.row * heads + g * group + j) * hd;
    const float inv = 1.0f / sums[j];
    for (int64_t d = 0; d < hd; ++d) o[d] = static_cast<T>(acc[j * hd + d] * inv);
  }
}

template <typename T>
void Run(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, std::span<const DecodeRow> rows,
         int64_t block_size, double scale, at::Tensor& out) {
  const int64_t heads = q.size(1), hd = q.size(2), kv_heads = k_cache.size(1);
  const T* qp = q.data_ptr<T>();
  const T* kp = k_cache.data_ptr<T>();
  const T* vp = v_cache.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const int64_t work = static_cast<int64_t>(rows.size()) * kv_heads;
  at::parallel_for(0, work, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, qf, acc;
    for (int64_t i = begin; i < end; ++i) {
      RowHead<T>(qp, kp, vp, rows[static_cast<size_t>(i / kv_heads)], i % kv_heads, heads, kv_heads, hd, block_size,
                 static_cast<float>(scale), op, scores, qf, acc);
    }
  });
}

}  // namespace

void PagedDecodeAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                          std::span<const DecodeRow> rows, int64_t block_size, double scale, at::Tensor& out) {
  TORCH_CHECK(q.is_contiguous() && out.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous(),
              "paged attention needs contiguous tensors");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type() && q.scalar_type() == out.scalar_type(),
              "paged attention needs one dtype");
  TORCH_CHECK(q.size(1) % k_cache.size(1) == 0, "query heads must be a multiple of KV heads");
  if (rows.empty()) return;
  if (q.scalar_type() == at::kFloat) {
    Run<float>(q, k_cache, v_cache, rows, block_size, scale, out);
  } else {
    TORCH_CHECK(q.scalar_type() == at::kBFloat16, "paged attention supports float32 and bfloat16");
    Run<c10::BFloat16>(q, k_cache, v_cache, rows, block_size, scale, out);
  }
}

}  // namespace adapterd::model
