// Forward math of the adapter kinds that are not a low-rank delta.
#ifndef ADAPTERD_SERVER_MODEL_ADAPTER_OPS_H_
#define ADAPTERD_SERVER_MODEL_ADAPTER_OPS_H_

#include <ATen/core/Tensor.h>

#include "server/model/adapter_weights.h"

namespace adapterd::model {

// The hidden state after one sublayer with a bottleneck adapter, for the rows
// of one segment: `h` is the sublayer's output [n, hidden] and `x` its
// residual input [n, hidden]. Without an adapter this would be x + h; see
// BottleneckModule for the formula. Pure; safe from any thread.
at::Tensor BottleneckForward(const BottleneckModule& m, const at::Tensor& h, const at::Tensor& x);

// BottleneckForward in two halves around the module's two products, for a
// backend that computes the products itself: Prepare gives the down
// projection's input (LN_before(z)) and the residual the output adds;
// Finish takes `up` = up(act(down(input))), before the scaling, and gives
// what BottleneckForward gives.
struct BottleneckInput {
  at::Tensor input;
  at::Tensor residual;
};
BottleneckInput BottleneckPrepare(const BottleneckModule& m, const at::Tensor& h, const at::Tensor& x);
at::Tensor BottleneckFinish(const BottleneckModule& m, const at::Tensor& up, const at::Tensor& h, const at::Tensor& x,
                            const at::Tensor& residual);

// LLaMA-Adapter's gated attention over the adaption prompt for one
// segment's queries `q` [n, num_heads, head_dim] (RoPE applied):
// gate * softmax(q k^T * scale) v, the softmax in float32 over the prompt
// alone, as [n, num_heads, head_dim] in q's dtype (before o_proj). Pure.
at::Tensor AdaptionPromptAttention(const AdaptionPromptModule& m, const at::Tensor& q, double scale);

// Applies one of the bottleneck nonlinearities.
at::Tensor Activate(const at::Tensor& x, Activation act);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_ADAPTER_OPS_H_
