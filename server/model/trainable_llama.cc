#include "server/model/trainable_llama.h"

#include <ATen/ATen.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace adapterd::model {
namespace {

constexpr int64_t kPerLayer = 9;  // input norm, q, k, v, o, post norm, gate, up, down

int64_t LayerSlot(Proj p) {
  switch (p) {
    case Proj::kQ: return 1;
    case Proj::kK: return 2;
    case Proj::kV: return 3;
    case Proj::kO: return 4;
    case Proj::kGate: return 6;
    case Proj::kUp: return 7;
    case Proj::kDown: return 8;
  }
  return 1;
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return weight * (x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps));
}

// x [..., T, head_dim] with cos/sin [T, head_dim]: x * cos + rotate_half(x) * sin.
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

}  // namespace

std::vector<std::string> LlamaTensorNames(const ModelConfig& c) {
  std::vector<std::string> names = {"model.embed_tokens.weight"};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    for (const char* n : {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                          "mlp.down_proj"}) {
      names.push_back(absl::StrCat(p, n, ".weight"));
    }
  }
  names.push_back("model.norm.weight");
  names.push_back("lm_head.weight");
  return names;
}

std::vector<std::vector<int64_t>> LlamaTensorShapes(const ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  std::vector<std::vector<int64_t>> shapes = {{c.vocab_size, H}};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    for (std::vector<int64_t> s : std::vector<std::vector<int64_t>>{
             {H}, {q, H}, {kv, H}, {kv, H}, {H, q}, {H}, {I, H}, {I, H}, {H, I}}) {
      shapes.push_back(std::move(s));
    }
  }
  shapes.push_back({H});
  shapes.push_back({c.vocab_size, H});
  return shapes;
}

absl::StatusOr<TrainableLlama> TrainableLlama::Create(const ModelConfig& config, std::vector<at::Tensor> weights) {
  if (config.attention_bias || config.o_proj_bias || config.mlp_bias || config.tie_word_embeddings ||
      config.rope.type != RopeConfig::Type::kDefault || config.architecture != Architecture::kLlama) {
    return absl::FailedPreconditionError(
        "training supports LlamaForCausalLM without biases, tied embeddings or RoPE scaling");
  }
  const std::vector<std::string> names = LlamaTensorNames(config);
  const std::vector<std::vector<int64_t>> shapes = LlamaTensorShapes(config);
  if (weights.size() != names.size()) {
    return absl::InvalidArgumentError(absl::StrCat("expected ", names.size(), " weights, got ", weights.size()));
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!weights[i].defined() || weights[i].scalar_type() != at::kFloat || weights[i].sizes() != shapes[i]) {
      return absl::InvalidArgumentError(absl::StrCat(names[i], " must be a float32 tensor of shape [",
                                                     absl::StrJoin(shapes[i], ", "), "]"));
    }
  }
  TrainableLlama m;
  m.config_ = config;
  m.weights_ = std::move(weights);
  return m;
}

at::Tensor TrainableLlama::Project(const at::Tensor& x, int64_t layer, Proj p,
                                   const std::vector<const LoraFactors*>& lora) const {
  at::Tensor y = at::linear(x, weights_[1 + layer * kPerLayer + LayerSlot(p)]);
  if (const LoraFactors* f = lora[layer * kNumProj + static_cast<int>(p)]; f != nullptr) {
    y = y + at::linear(at::linear(x, f->a), f->b) * f->scale;
  }
  return y;
}

at::Tensor TrainableLlama::Forward(const at::Tensor& ids, std::span<const LoraFactors> lora) const {
  const ModelConfig& c = config_;
  const int64_t B = ids.size(0), T = ids.size(1), hd = c.head_dim;
  std::vector<const LoraFactors*> by_slot(c.num_layers * kNumProj, nullptr);
  for (const LoraFactors& f : lora) by_slot[f.layer * kNumProj + static_cast<int>(f.proj)] = &f;

  at::Tensor exponent = at::arange(0, hd, 2, at::kLong).to(at::kFloat) / static_cast<double>(hd);
  at::Tensor inv_freq = at::reciprocal(at::pow(c.rope.theta, exponent));
  at::Tensor freqs = at::arange(T, at::kFloat).unsqueeze(1) * inv_freq.unsqueeze(0);
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos(), sin = emb.sin();
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const int64_t repeat = c.num_heads / c.num_kv_heads;

  at::Tensor x = at::embedding(weights_[0], ids);  // [B, T, H]
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const at::Tensor* w = &weights_[1 + l * kPerLayer];
    at::Tensor h = RmsNorm(x, w[0], c.rms_norm_eps);
    at::Tensor q = Project(h, l, Proj::kQ, by_slot).view({B, T, c.num_heads, hd}).transpose(1, 2);
    at::Tensor k = Project(h, l, Proj::kK, by_slot).view({B, T, c.num_kv_heads, hd}).transpose(1, 2);
    at::Tensor v = Project(h, l, Proj::kV, by_slot).view({B, T, c.num_kv_heads, hd}).transpose(1, 2);
    q = ApplyRope(q, cos, sin);
    k = ApplyRope(k, cos, sin);
    if (repeat > 1) {
      k = k.repeat_interleave(repeat, 1);
      v = v.repeat_interleave(repeat, 1);
    }
    at::Tensor o = at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, /*is_causal=*/true, scale);
    x = x + Project(o.transpose(1, 2).reshape({B, T, c.num_heads * hd}), l, Proj::kO, by_slot);
    h = RmsNorm(x, w[5], c.rms_norm_eps);
    at::Tensor act = at::silu(Project(h, l, Proj::kGate, by_slot)) * Project(h, l, Proj::kUp, by_slot);
    x = x + Project(act, l, Proj::kDown, by_slot);
  }
  const int64_t last = 1 + c.num_layers * kPerLayer;
  return at::linear(RmsNorm(x, weights_[last], c.rms_norm_eps), weights_[last + 1]);
}

at::Tensor TrainableLlama::NextTokenLoss(const at::Tensor& ids, std::span<const LoraFactors> lora) const {
  const int64_t T = ids.size(1) - 1;
  at::Tensor logits = Forward(ids.narrow(1, 0, T), lora);
  return at::cross_entropy_loss(logits.reshape({-1, config_.vocab_size}), ids.narrow(1, 1, T).reshape({-1}));
}

}  // namespace adapterd::model
