// The ends of the forward pass where adapters bring whole modules: the input
// embedding (replaced embeddings, trainable tokens, LoRA on embed_tokens)
// and the output heads (replaced LM heads, trainable head rows,
// classification heads).
#ifndef ADAPTERD_SERVER_MODEL_ADAPTER_HEADS_H_
#define ADAPTERD_SERVER_MODEL_ADAPTER_HEADS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "server/model/adapter_weights.h"

namespace adapterd::model {

// A run of consecutive rows of a flat batch that share one adapter.
struct AdapterSegment {
  int64_t start = 0, rows = 0;
  const AdapterWeights* adapter = nullptr;  // never null
};

// The input embeddings [T, hidden] of `ids` (int64 [T] on the model's
// device; `host_ids` holds the same values): the base embedding's rows,
// except where a segment's adapter changes them. A replaced embedding
// supplies all of its segment's rows; trainable tokens replace the rows of
// their ids; LoRA on embed_tokens adds scale * A^T[id] B^T. Rows outside
// the segments, and segments whose adapters keep the base embedding, cost
// one shared lookup. May throw (call inside TorchCall).
at::Tensor EmbedTokens(const at::Tensor& embed, const at::Tensor& ids, const std::vector<int64_t>& host_ids,
                       const std::vector<AdapterSegment>& segments);

// One row of the last hidden states that needs an output: its adapter (null
// for the base) and whether it is a classification row.
struct HeadRow {
  const AdapterWeights* adapter = nullptr;
  bool classify = false;
};

// What one forward step returns.
struct ForwardOutput {
  // float32 [rows that generate, vocab], in row order.
  at::Tensor logits;
  // float32 [num_labels] per classification row, in row order.
  std::vector<at::Tensor> scores;
};

// The outputs of `hidden` [rows.size(), hidden] (after the final norm).
// Generation rows whose adapter keeps the base LM head share one product
// with it; trainable head rows then overwrite their adapter's rows' columns
// of that product; an adapter with its own LM head is applied to its rows
// only. A classification row applies its adapter's classifier, which it
// must have. With no classification rows and no adapter head, this is
// exactly the base model's one product. The LM head products go through
// Linear() (linear.h) with `skinny_rows`, and the base head's with
// `lm_head_packed` (PackLinearWeight(lm_head), or undefined). May throw.
ForwardOutput ApplyHeads(const at::Tensor& hidden, const at::Tensor& lm_head, const std::vector<HeadRow>& rows,
                         int64_t skinny_rows, const at::Tensor& lm_head_packed = at::Tensor());

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_ADAPTER_HEADS_H_
