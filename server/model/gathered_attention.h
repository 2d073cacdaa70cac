// Attention of decode rows over the paged KV cache, gathered: the batched
// path for devices without an in-place kernel.
#ifndef ADAPTERD_SERVER_MODEL_GATHERED_ATTENTION_H_
#define ADAPTERD_SERVER_MODEL_GATHERED_ATTENTION_H_

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <span>

#include "server/model/paged_attention.h"

namespace adapterd::model {

// A step's decode rows as GatheredDecodeAttention reads them, on the
// device: made once per step (one host-to-device copy) and used by every
// layer. Empty (rows == 0) when the step has no decode rows.
struct GatheredDecodeRows {
  int64_t rows = 0;
  int64_t longest = 0;  // the longest context among the rows
  at::Tensor slots;     // [rows * longest] cache slots, padded with slot 0
  at::Tensor mask;      // [rows, 1, 1, longest]: true within each row's context
  at::Tensor q_rows;    // [rows]: each row's row of q and out
};

GatheredDecodeRows GatherDecodeRows(std::span<const DecodeRow> rows, int64_t block_size, c10::Device device);

// The same result as PagedDecodeAttention, on any device and dtype, in a
// fixed number of ATen calls per layer whatever the number of rows: every
// row's context is gathered from the blocks into one [rows, longest
// context] batch, padded positions are masked, and one
// scaled_dot_product_attention call attends all rows and heads (GQA
// through SDPA's grouped heads). Memory is the gathered K and V: rows x
// longest context x kv_heads x head_dim, twice. q and out are [T, heads,
// head_dim]; k_cache and v_cache [slots, kv_heads, head_dim], on the
// device `rows` was made for. Rows not named are left as they are.
void GatheredDecodeAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                             const GatheredDecodeRows& rows, double scale, at::Tensor& out);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_GATHERED_ATTENTION_H_
