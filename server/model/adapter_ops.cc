#include "server/model/adapter_ops.h"

#include <ATen/ATen.h>

namespace adapterd::model {
namespace {

// nn.LayerNorm's default epsilon, which AdapterHub's adapter norms use.
constexpr double kLayerNormEps = 1e-5;

at::Tensor MaybeLayerNorm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (!w.defined()) return x;
  return at::layer_norm(x, {x.size(-1)}, w, b, kLayerNormEps);
}

}  // namespace

at::Tensor Activate(const at::Tensor& x, Activation act) {
  switch (act) {
    case Activation::kRelu: return at::relu(x);
    case Activation::kGelu: return at::gelu(x);
    case Activation::kGeluTanh: return at::gelu(x, "tanh");
    case Activation::kSilu: return at::silu(x);
    case Activation::kTanh: return at::tanh(x);
    case Activation::kSigmoid: return at::sigmoid(x);
    case Activation::kLeakyRelu: return at::leaky_relu(x, 0.01);
    case Activation::kIdentity: return x;
  }
  return x;
}

BottleneckInput BottleneckPrepare(const BottleneckModule& m, const at::Tensor& h, const at::Tensor& x) {
  const at::Tensor z = m.parallel ? x : (m.original_ln_before ? h + x : h);
  return {MaybeLayerNorm(z, m.ln_before_w, m.ln_before_b), m.residual_before_ln ? h : z};
}

at::Tensor BottleneckFinish(const BottleneckModule& m, const at::Tensor& up, const at::Tensor& h, const at::Tensor& x,
                            const at::Tensor& residual) {
  at::Tensor o = m.scaling_t.defined() ? up * m.scaling_t : up * m.scaling;
  if (m.parallel) {
    o = MaybeLayerNorm(o, m.ln_after_w, m.ln_after_b) + h;
    return m.original_ln_after ? o + x : o;
  }
  if (m.adapter_residual_before_ln) {
    o = MaybeLayerNorm(o + residual, m.ln_after_w, m.ln_after_b);
  } else {
    o = MaybeLayerNorm(o, m.ln_after_w, m.ln_after_b) + residual;
  }
  return m.original_ln_after ? o + x : o;
}

at::Tensor BottleneckForward(const BottleneckModule& m, const at::Tensor& h, const at::Tensor& x) {
  const BottleneckInput in = BottleneckPrepare(m, h, x);
  const at::Tensor down = Activate(at::addmm(m.down_b, in.input, m.down_t), m.act);
  return BottleneckFinish(m, at::addmm(m.up_b, down, m.up_t), h, x, in.residual);
}

at::Tensor AdaptionPromptAttention(const AdaptionPromptModule& m, const at::Tensor& q, double scale) {
  at::Tensor qh = q.transpose(0, 1);                              // [nh, n, hd]
  at::Tensor scores = at::matmul(qh, m.k_t.to(q.scalar_type())) * scale;  // [nh, n, len]
  at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  at::Tensor out = at::matmul(m.gate * probs, m.v);               // [nh, n, hd]
  return out.transpose(0, 1);
}

}  // namespace adapterd::model
