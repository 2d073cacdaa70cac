// Attention of decode rows over the paged KV cache, read in place.
#ifndef ADAPTERD_SERVER_MODEL_PAGED_ATTENTION_H_
#define ADAPTERD_SERVER_MODEL_PAGED_ATTENTION_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <span>
#include <vector>

namespace adapterd::model {

// One decode row: a sequence's single new query token, which attends to
// the first `length` positions of its context (its own key and value
// already written), found through `block_table`.
struct DecodeRow {
  const std::vector<int32_t>* block_table;
  int64_t length;
  int64_t row;  // the row of `q` and `out`
};

// out[r] = softmax(q[r] k^T * scale) v over each row's context, for every
// query head, query head h reading KV head h / (heads / kv_heads) (GQA).
// Keys and values are read where they sit in the cache's blocks: nothing
// is gathered or copied, and all rows and KV heads of a step run in one
// parallel loop. q and out are [rows, heads, head_dim]; k_cache and v_cache
// [slots, kv_heads, head_dim], contiguous, on the CPU, all float32, all
// bfloat16 or all float16; scores, softmax and sums are float32. Rows not
// named are left as they are.
void PagedDecodeAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                          std::span<const DecodeRow> rows, int64_t block_size, double scale, at::Tensor& out);

// Whether PagedDecodeAttention can read a cache of this dtype and device.
bool PagedAttentionSupports(const at::Tensor& cache);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_PAGED_ATTENTION_H_
