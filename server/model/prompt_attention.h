#ifndef ADAPTERD_SERVER_MODEL_PROMPT_ATTENTION_H_
#define ADAPTERD_SERVER_MODEL_PROMPT_ATTENTION_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "server/model/llama_model.h"
#include "server/model/step_layout.h"

namespace adapterd::model {

// Attention for the prompt chunks that the layout does not attend in place
// (those with read slots) in one layer of a step: each chunk's rows of `q`
// [T, heads, head_dim] attend over its context, read from the layer's
// caches through the layout's read slots (its new tokens' K and V already
// written), causally, with SDPA; the results go to the same rows of `attn`
// [T, heads, head_dim]. The layout's decode rows are left alone. `kv_heads` divides `heads`
// (grouped-query attention). May throw (called inside TorchCall).
void PromptChunkAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                          const ForwardBatch& batch, const StepLayout& layout, int64_t kv_heads, double scale,
                          at::Tensor& attn);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_PROMPT_ATTENTION_H_
