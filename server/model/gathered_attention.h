// Attention of decode rows over the paged KV cache, gathered: the batched
// path for devices without an in-place kernel.
#ifndef ADAPTERD_SERVER_MODEL_GATHERED_ATTENTION_H_
#define ADAPTERD_SERVER_MODEL_GATHERED_ATTENTION_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <span>

#include "server/model/paged_attention.h"

namespace adapterd::model {

// The same result as PagedDecodeAttention, on any device and dtype, in a
// fixed number of ATen calls per layer whatever the number of rows: every
// row's context is gathered from the blocks into one [rows, longest
// context] batch (one copy of its slot indices to the device), padded
// positions are masked, and one scaled_dot_product_attention call attends
// all rows and heads (GQA through SDPA's grouped heads). Memory is the
// gathered K and V: rows x longest context x kv_heads x head_dim, twice.
// q and out are [T, heads, head_dim]; k_cache and v_cache [slots,
// kv_heads, head_dim], on q's device. Rows not named are left as they are.
void GatheredDecodeAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                             std::span<const DecodeRow> rows, int64_t block_size, double scale, at::Tensor& out);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_GATHERED_ATTENTION_H_
