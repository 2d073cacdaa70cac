#include "server/model/llama_model.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numbers>
#include <optional>
#include <span>
#include <utility>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/common/compute_threads.h"
#include "server/common/torch_call.h"
#include "server/gpu/step_graph.h"
#include "server/model/adapter_ops.h"
#include "server/model/checkpoint.h"
#include "server/model/decode_graphs.h"
#include "server/model/gathered_attention.h"
#include "server/model/linear.h"
#include "server/model/paged_attention.h"
#include "server/model/rope_cache.h"
#include "server/model/swiglu.h"
#include "server/model/prompt_attention.h"
#include "server/model/rms_norm.h"
#include "server/model/step_layout.h"

namespace adapterd::model {

// Projections that share their input run as one GEMM over weights
// concatenated at load: q/k/v and gate/up.
struct LlamaModel::ProjGroup {
  at::Tensor w;       // [sum of widths, in]
  at::Tensor packed;  // PackLinearWeight(w) with ModelOptions::prepack_weights, or undefined
  at::Tensor b;  // [sum of widths]; undefined when the base has no bias here
  std::vector<ProjSlice> slices;
};

struct LlamaModel::Layer {
  at::Tensor input_norm, post_attention_norm;
  ProjGroup qkv, o, gate_up, down;
  // Each projection's weight [out, in] and bias [out] (undefined when
  // absent): row views of its group's, never copies.
  std::array<at::Tensor, kNumProj> w, b;
};

LlamaModel::~LlamaModel() = default;

namespace {

// Inverse frequencies exactly as transformers computes them (float32 ops).
at::Tensor InverseFrequencies(const ModelConfig& c) {
  const int64_t dim = c.head_dim;
  at::Tensor exponent = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = at::reciprocal(at::pow(c.rope.theta, exponent));
  switch (c.rope.type) {
    case RopeConfig::Type::kDefault:
      return inv_freq;
    case RopeConfig::Type::kLinear:
      return inv_freq / c.rope.factor;
    case RopeConfig::Type::kLlama3: {
      const double factor = c.rope.factor, low = c.rope.low_freq_factor,
                   high = c.rope.high_freq_factor;
      const double old_len = static_cast<double>(c.rope.original_max_position_embeddings);
      const double low_wavelen = old_len / low, high_wavelen = old_len / high;
      at::Tensor wavelen = 2 * std::numbers::pi / inv_freq;
      at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / factor, inv_freq);
      at::Tensor smooth = (old_len / wavelen - low) / (high - low);
      at::Tensor smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
      at::Tensor medium = at::logical_not(wavelen < high_wavelen)
                              .logical_and(at::logical_not(wavelen > low_wavelen));
      return at::where(medium, smoothed, scaled);
    }
  }
  return inv_freq;
}

// q * cos + rotate_half(q) * sin, with x [T, heads, head_dim] and cos/sin [T, head_dim].
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  at::Tensor rotated = at::cat({-x2, x1}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

// Prompt tuning: a sequence's first positions take its adapter's virtual
// token embeddings in `x` [T, H] instead of the placeholder ids the engine
// put there.
void InjectVirtualTokens(const ForwardBatch& batch, at::Tensor& x) {
  if (batch.adapters.empty()) return;
  int64_t start = 0;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const SequenceChunk& sc = batch.seqs[i];
    const AdapterWeights* a = batch.adapters[i];
    if (a != nullptr && a->prompt().defined() && sc.context_len < a->num_virtual_tokens()) {
      const int64_t n = std::min(sc.num_tokens, a->num_virtual_tokens() - sc.context_len);
      x.narrow(0, start, n).copy_(a->prompt().narrow(0, sc.context_len, n));
    }
    start += sc.num_tokens;
  }
}

// ModelOptions::lora_dtype against the model's device and dtype.
absl::Status CheckLoraDtype(const ModelOptions& o) {
  const c10::ScalarType t = o.lora_dtype;
  if (t == c10::ScalarType::Undefined || t == o.dtype) return absl::OkStatus();
  const bool half = t == c10::ScalarType::BFloat16 || t == c10::ScalarType::Half;
  if (half && o.dtype == c10::ScalarType::Float && o.device.is_cpu()) return absl::OkStatus();
  auto name = [](c10::ScalarType d) {
    return d == c10::ScalarType::Float      ? "float32"
           : d == c10::ScalarType::BFloat16 ? "bfloat16"
           : d == c10::ScalarType::Half     ? "float16"
                                            : c10::toString(d);
  };
  return absl::InvalidArgumentError(absl::StrCat(
      "--lora_dtype=", name(t), " on a ", name(o.dtype), " model on ", o.device.str(),
      ": LoRA weights take the model's dtype there (bfloat16 or float16 only on a float32 model on cpu)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& dir,
                                                             const ModelOptions& options) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromDirectory(dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) return ckpt.status();
  (*ckpt)->Prefault();

  if (absl::Status s = CheckLoraDtype(options); !s.ok()) return s;
  auto model = std::unique_ptr<LlamaModel>(new LlamaModel());
  model->config_ = *config;
  model->options_ = options;
  absl::StatusOr<std::unique_ptr<DeltaBackend>> backend = MakeDeltaBackend(options.device, options.delta_backend);
  if (!backend.ok()) return backend.status();
  model->delta_backend_ = *std::move(backend);
  const ModelConfig& c = model->config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;

  absl::Status status;
  auto get = [&](const std::string& name, std::vector<int64_t> shape) -> at::Tensor {
    if (!status.ok()) return {};
    absl::StatusOr<at::Tensor> t = (*ckpt)->Get(name, shape, options.dtype, options.device);
    if (!t.ok()) {
      status = t.status();
      return {};
    }
    return *t;
  };
  model->embed_tokens_ = get("model.embed_tokens.weight", {c.vocab_size, H});
  model->final_norm_ = get("model.norm.weight", {H});
  if (c.tie_word_embeddings) {  // transformers ties even when lm_head.weight is stored
    model->lm_head_ = model->embed_tokens_;
  } else {
    model->lm_head_ = get("lm_head.weight", {c.vocab_size, H});
  }
  for (int64_t i = 0; i < c.num_layers && status.ok(); ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Layer l;
    l.input_norm = get(p + "input_layernorm.weight", {H});
    l.post_attention_norm = get(p + "post_attention_layernorm.weight", {H});
    // Reads one group's weights (and biases, where `bias`) and concatenates them.
    auto group = [&](std::initializer_list<std::tuple<Proj, int64_t, int64_t>> projs, bool bias) {
      ProjGroup g;
      std::vector<at::Tensor> ws, bs;
      int64_t col = 0;
      for (const auto& [proj, out, in] : projs) {
        const std::string name = p + std::string(ProjPath(proj));
        ws.push_back(get(name + ".weight", {out, in}));
        if (bias) bs.push_back(get(name + ".bias", {out}));
        g.slices.push_back({proj, col, out});
        col += out;
      }
      if (!status.ok()) return g;
      g.w = ws.size() == 1 ? ws[0] : at::cat(ws, 0);
      if (bias) g.b = bs.size() == 1 ? bs[0] : at::cat(bs, 0);
      if (ws.size() > 1) {  // the file's copies of the weights are not read again
        ws.clear();
        for (const auto& [proj, out, in] : projs) (*ckpt)->Release(p + std::string(ProjPath(proj)) + ".weight");
      }
      for (const ProjSlice& s : g.slices) {
        l.w[static_cast<int>(s.proj)] = g.w.narrow(0, s.col, s.width);
        if (bias) l.b[static_cast<int>(s.proj)] = g.b.narrow(0, s.col, s.width);
      }
      return g;
    };
    status.Update(TorchCall(absl::StrCat("concatenating the projections of layer ", i), [&] {
      l.qkv = group({{Proj::kQ, q_out, H}, {Proj::kK, kv_out, H}, {Proj::kV, kv_out, H}}, c.attention_bias);
      l.o = group({{Proj::kO, H, q_out}}, c.o_proj_bias);
      l.gate_up = group({{Proj::kGate, I, H}, {Proj::kUp, I, H}}, c.mlp_bias);
      l.down = group({{Proj::kDown, H, I}}, c.mlp_bias);
    }));
    model->layers_.push_back(std::move(l));
  }
  if (!status.ok()) return status;
  if (options.prepack_weights) {
    status = TorchCall("packing the base's weights for oneDNN", [&] {
      for (Layer& l : model->layers_) {
        for (ProjGroup* g : {&l.qkv, &l.o, &l.gate_up, &l.down}) g->packed = PackLinearWeight(g->w);
      }
      model->lm_head_packed_ = PackLinearWeight(model->lm_head_);
    });
    if (!status.ok()) return status;
  }
  if (options.skinny_rows < 0) {
    model->options_.skinny_rows = DefaultSkinnyRows(options.dtype, model->lm_head_packed_.defined());
  }
  for (const std::string& name : (*ckpt)->UnusedNames()) {
    LOG(WARNING) << dir << ": ignoring tensor '" << name << "' that the model does not use";
  }

  status = TorchCall("computing rotary tables", [&] {
    at::Tensor inv_freq = InverseFrequencies(c);
    at::Tensor pos = at::arange(c.max_position_embeddings, at::kLong).to(at::kFloat);
    at::Tensor freqs = pos.unsqueeze(1) * inv_freq.unsqueeze(0);
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    model->rope_cos_ = emb.cos().to(options.device, options.dtype);
    model->rope_sin_ = emb.sin().to(options.device, options.dtype);
  });
  if (!status.ok()) return status;
  if (options.adapter_slots > 0) {  // after the base, which needs its memory first
    absl::StatusOr<std::unique_ptr<LoraSlotPool>> pool =
        LoraSlotPool::Create(c, options.adapter_slots, options.adapter_slot_rank, options.device, options.dtype);
    if (!pool.ok()) return pool.status();
    model->slot_pool_ = *std::move(pool);
  }
  const bool graphs = options.device.is_cuda() && gpu::StepGraphsBuilt();
  DecodeSteps steps = options.decode_steps;
  if (steps == DecodeSteps::kAuto) steps = graphs ? DecodeSteps::kGraphs : DecodeSteps::kEager;
  if (steps == DecodeSteps::kGraphs && !graphs) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA graphs for decode steps (--cuda_graphs=on) on ", options.device.str(), ": ",
        options.device.is_cuda() ? "this build has none (build against a CUDA LibTorch, bench/gpu/bundle.sh)"
                                 : "not a CUDA device"));
  }
  model->options_.decode_steps = steps;
  if (steps != DecodeSteps::kEager) {
    const LlamaModel* m = model.get();
    model->decode_graphs_ = std::make_unique<DecodeGraphs>(
        steps, *model->delta_backend_, c.num_layers, options.device, options.dtype,
        [m](const FixedDecodeInputs& in, KvCache& kv) { return m->FixedDecodeStep(in, kv); });
  }
  return model;
}

int64_t LlamaModel::weight_bytes() const {
  int64_t total = embed_tokens_.nbytes() + final_norm_.nbytes();
  if (!lm_head_.is_same(embed_tokens_)) total += lm_head_.nbytes();
  if (lm_head_packed_.defined()) total += lm_head_.nbytes();  // as many elements, blocked
  for (const Layer& l : layers_) {
    total += l.input_norm.nbytes() + l.post_attention_norm.nbytes();
    for (const ProjGroup* g : {&l.qkv, &l.o, &l.gate_up, &l.down}) {
      total += g->w.nbytes() * (g->packed.defined() ? 2 : 1) + (g->b.defined() ? g->b.nbytes() : 0);
    }
  }
  return total;
}

const char* LlamaModel::delta_backend_name() const { return delta_backend_->name(); }

const at::Tensor& LlamaModel::ProjBias(int64_t layer, Proj p) const {
  return layers_[layer].b[static_cast<int>(p)];
}

const at::Tensor& LlamaModel::ProjWeight(int64_t layer, Proj p) const {
  return layers_[layer].w[static_cast<int>(p)];
}

std::vector<at::Tensor> LlamaModel::Project(const at::Tensor& x, const ProjGroup& g, int64_t layer,
                                            const std::vector<Segment>& segments, const DeltaStep* step,
                                            StepProfile* prof) const {
  double* const gemm_time = prof != nullptr ? &prof->gemm : nullptr;
  double* const adapter_time = prof != nullptr ? &prof->adapters : nullptr;
  // The group's output, one column view per projection.
  auto split = [&](const at::Tensor& y) {
    std::vector<at::Tensor> outs;
    for (const ProjSlice& s : g.slices) outs.push_back(g.slices.size() == 1 ? y : y.narrow(1, s.col, s.width));
    return outs;
  };
  if (segments.empty()) {
    ScopedTimer timer(gemm_time);
    return split(Linear(x, g.w, g.b, options_.skinny_rows, g.packed));
  }
  // IA3 on a feed-forward module scales its segment's input rows; a group
  // in which some projection sees a rescaled input runs projection by
  // projection (the base product still once per projection).
  std::vector<at::Tensor> inputs;
  bool rescaled = false;
  {
    ScopedTimer timer(adapter_time);
    for (const ProjSlice& s : g.slices) {
      inputs.push_back(delta_backend_->ScaleInputs(x, layer, s.proj, segments));
      rescaled = rescaled || !inputs.back().is_same(x);
    }
  }
  if (!rescaled || g.slices.size() == 1) {
    at::Tensor y;
    {
      ScopedTimer timer(gemm_time);
      y = Linear(inputs[0], g.w, g.b, options_.skinny_rows, g.packed);
    }
    ScopedTimer timer(adapter_time);
    delta_backend_->AddDeltas(x, y, g.b, layer, g.slices, segments, step);
    return split(y);
  }
  std::vector<at::Tensor> outs;
  for (size_t i = 0; i < g.slices.size(); ++i) {
    const ProjSlice one{g.slices[i].proj, 0, g.slices[i].width};
    const at::Tensor& w = ProjWeight(layer, one.proj);
    const at::Tensor& b = ProjBias(layer, one.proj);
    at::Tensor y;
    {
      ScopedTimer timer(gemm_time);
      y = Linear(inputs[i], w, b, options_.skinny_rows);
    }
    ScopedTimer timer(adapter_time);
    delta_backend_->AddDeltas(x, y, b, layer, std::span<const ProjSlice>(&one, 1), segments, step);
    outs.push_back(std::move(y));
  }
  return outs;
}

at::Tensor LlamaModel::Residual(const at::Tensor& x, const at::Tensor& h, int64_t layer,
                               BottleneckLocation loc, const std::vector<Segment>& segments,
                               StepProfile* prof) const {
  at::Tensor out = x + h;
  ScopedTimer timer(prof != nullptr && !segments.empty() ? &prof->adapters : nullptr);
  delta_backend_->ApplyBottlenecks(x, h, out, layer, loc, segments);
  return out;
}

AddRmsNormResult LlamaModel::ResidualNorm(const at::Tensor& x, const at::Tensor& h, int64_t layer,
                                          BottleneckLocation loc, const std::vector<Segment>& segments,
                                          const at::Tensor& norm, StepProfile* prof) const {
  const bool bottleneck = std::any_of(segments.begin(), segments.end(), [&](const Segment& s) {
    return s.adapter->FindBottleneck(layer, loc) != nullptr;
  });
  if (!bottleneck) return AddRmsNorm(x, h, norm, config_.rms_norm_eps);
  at::Tensor sum = Residual(x, h, layer, loc, segments, prof);
  at::Tensor normed = RmsNorm(sum, norm, config_.rms_norm_eps);
  return {std::move(sum), std::move(normed)};
}

absl::StatusOr<ForwardOutput> LlamaModel::Run(const ForwardBatch& batch, KvCache& kv) const {
  return TorchCall("forward", [&] { return ForwardImpl(batch, kv); });
}

absl::StatusOr<at::Tensor> LlamaModel::Forward(const ForwardBatch& batch, KvCache& kv) const {
  absl::StatusOr<ForwardOutput> out = Run(batch, kv);
  if (!out.ok()) return out.status();
  return std::move(out->logits);
}

ForwardOutput LlamaModel::ForwardImpl(const ForwardBatch& batch, KvCache& kv) const {
  c10::InferenceMode inference_mode;
  if (decode_graphs_ != nullptr && decode_graphs_->Takes(batch)) {
    return ForwardOutput{decode_graphs_->Run(batch, kv), {}};
  }
  const ModelConfig& c = config_;
  const int64_t T = static_cast<int64_t>(batch.token_ids.size());
  const int64_t bs = kv.block_size();
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  const StepLayout lay = StepLayout::Build(batch, bs, options_.device, options_.in_place_prompt_positions);
  const std::vector<Segment>& segments = lay.segments;
  // Decode rows read the cache in place (PagedDecodeAttention) on the CPU
  // in float32, bfloat16 and float16; elsewhere they are gathered, all rows
  // in one batch (GatheredDecodeAttention), with indices made once for all
  // layers.
  const bool paged_decode =
      options_.decode_attention == DecodeAttention::kAuto && PagedAttentionSupports(kv.k(0));
  const GatheredDecodeRows gathered =
      paged_decode ? GatheredDecodeRows{} : GatherDecodeRows(lay.decode_rows, bs, options_.device);
  at::Tensor ids = LongTensor(batch.token_ids).to(options_.device);
  at::Tensor pos = LongTensor(lay.positions).to(options_.device);
  at::Tensor wslots;  // made by the first layer that writes the cache through ATen
  at::Tensor cos = rope_cos_.index_select(0, pos), sin = rope_sin_.index_select(0, pos);

  at::Tensor x = EmbedTokens(embed_tokens_, ids, batch.token_ids, segments);  // [T, H]
  InjectVirtualTokens(batch, x);
  StepProfile* const prof = batch.profile;
  // What every layer's adapter calls share this step (the slot and row tables).
  std::unique_ptr<DeltaStep> delta_step;
  if (!segments.empty()) {
    ScopedTimer timer(prof != nullptr ? &prof->adapters : nullptr);
    delta_step = delta_backend_->BeginStep(segments, T, static_cast<int64_t>(layers_.size()), options_.device,
                                           options_.dtype);
  }
  // The rotated queries and the attention output have one shape in every
  // layer, and each layer is done with them before the next: made once per
  // step. (Each layer's uses end at its o_proj, which writes a new tensor.)
  at::Tensor q_buffer, attn_buffer;
  // Each residual sum comes with the next norm's output (ResidualNorm).
  at::Tensor h = layers_.empty() ? x : RmsNorm(x, layers_[0].input_norm, c.rms_norm_eps);
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& l = layers_[li];
    const int64_t L = static_cast<int64_t>(li);
    const std::vector<at::Tensor> qkv = Project(h, l.qkv, L, segments, delta_step.get(), prof);
    std::optional<ScopedTimer> attention_timer(std::in_place, prof != nullptr ? &prof->attention : nullptr);
    at::Tensor& kc = kv.k(L);
    at::Tensor& vc = kv.v(L);
    at::Tensor q;
    if (RopeCacheSupports(qkv[0], qkv[1], qkv[2], cos, sin, kc, vc)) {
      if (!q_buffer.defined()) q_buffer = at::empty({T, c.num_heads, c.head_dim}, qkv[0].options());
      q = q_buffer;
      RopeAndWriteCache(qkv[0], qkv[1], qkv[2], cos, sin, lay.write_slots, q, kc, vc);
    } else {
      q = ApplyRope(qkv[0].view({T, c.num_heads, c.head_dim}), cos, sin);
      if (!wslots.defined()) wslots = LongTensor(lay.write_slots).to(options_.device);
      kc.index_copy_(0, wslots, ApplyRope(qkv[1].view({T, c.num_kv_heads, c.head_dim}), cos, sin));
      vc.index_copy_(0, wslots, qkv[2].view({T, c.num_kv_heads, c.head_dim}));
    }
    if (!attn_buffer.defined()) attn_buffer = at::empty({T, c.num_heads, c.head_dim}, q.options());
    at::Tensor attn = attn_buffer;
    if (paged_decode && !lay.decode_rows.empty()) {
      PagedDecodeAttention(q.contiguous(), kc, vc, lay.decode_rows, bs, scale, attn);
    } else if (!paged_decode) {
      GatheredDecodeAttention(q, kc, vc, gathered, scale, attn);
    }
    PromptChunkAttention(q, kc, vc, batch, lay, c.num_kv_heads, scale, attn);
    attention_timer.reset();
    at::Tensor attn_out = AttentionOutput(attn, q, l, L, segments, delta_step.get(), prof);
    AddRmsNormResult r =
        ResidualNorm(x, attn_out, L, BottleneckLocation::kAttention, segments, l.post_attention_norm, prof);
    x = std::move(r.sum);
    const std::vector<at::Tensor> gate_up = Project(r.normed, l.gate_up, L, segments, delta_step.get(), prof);
    at::Tensor act = SwiGluSupports(gate_up[0], gate_up[1]) ? SwiGlu(gate_up[0], gate_up[1])
                                                             : at::silu(gate_up[0]) * gate_up[1];
    const at::Tensor down = Project(act, l.down, L, segments, delta_step.get(), prof)[0];
    if (li + 1 == layers_.size()) {
      x = Residual(x, down, L, BottleneckLocation::kOutput, segments, prof);
      break;
    }
    r = ResidualNorm(x, down, L, BottleneckLocation::kOutput, segments, layers_[li + 1].input_norm, prof);
    x = std::move(r.sum);
    h = std::move(r.normed);
  }
  if (lay.logit_rows.empty()) return ForwardOutput{at::empty({0, c.vocab_size}, at::kFloat), {}};
  at::Tensor last = x.index_select(0, LongTensor(lay.logit_rows).to(options_.device));
  at::Tensor normed = RmsNorm(last, final_norm_, c.rms_norm_eps);
  ScopedTimer head_timer(prof != nullptr ? &prof->gemm : nullptr);
  return ApplyHeads(normed, lm_head_, lay.heads, options_.skinny_rows, lm_head_packed_);
}

at::Tensor LlamaModel::AttentionOutput(at::Tensor& attn, const at::Tensor& q, const Layer& l, int64_t layer,
                                       const std::vector<Segment>& segments, const DeltaStep* delta_step,
                                       StepProfile* prof) const {
  const ModelConfig& c = config_;
  const int64_t T = attn.size(0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  // LLaMA-Adapter: PEFT adds o_proj(gated prompt attention) to o_proj(attention);
  // o_proj is linear, so the sum goes through it once (its bias once more below).
  std::vector<const Segment*> adapted;
  std::optional<ScopedTimer> adapter_timer(std::in_place,
                                           prof != nullptr && !segments.empty() ? &prof->adapters : nullptr);
  for (const Segment& s : segments) {
    const AdaptionPromptModule* m = s.adapter->FindAdaptionPrompt(layer);
    if (m == nullptr) continue;
    attn.narrow(0, s.start, s.rows).add_(AdaptionPromptAttention(*m, q.narrow(0, s.start, s.rows), scale));
    adapted.push_back(&s);
  }
  adapter_timer.reset();
  at::Tensor out = Project(attn.view({T, c.num_heads * c.head_dim}), l.o, layer, segments, delta_step, prof)[0];
  if (l.o.b.defined()) {
    for (const Segment* s : adapted) out.narrow(0, s->start, s->rows).add_(l.o.b);
  }
  return out;
}

std::vector<at::Tensor> LlamaModel::FixedProject(const at::Tensor& x, const ProjGroup& g, int64_t layer,
                                                 const DeltaTables* tables) const {
  at::Tensor y = Linear(x, g.w, g.b, options_.skinny_rows, g.packed);
  if (tables != nullptr) delta_backend_->AddTableDeltas(x, y, layer, g.slices, *tables);
  std::vector<at::Tensor> outs;
  for (const ProjSlice& s : g.slices) outs.push_back(g.slices.size() == 1 ? y : y.narrow(1, s.col, s.width));
  return outs;
}

// The decode rows of ForwardImpl() at the shapes of `in`: the same
// operations (gathered attention, LoRA through the backend's tables) with
// nothing read back to the host, so that a CUDA graph can capture them.
at::Tensor LlamaModel::FixedDecodeStep(const FixedDecodeInputs& in, KvCache& kv) const {
  c10::InferenceMode inference_mode;
  const ModelConfig& c = config_;
  const int64_t B = in.rows;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  GatheredDecodeRows rows;
  rows.rows = B;
  rows.longest = in.context;
  rows.slots = in.read_slots;
  rows.mask = at::arange(in.context, in.lengths.options()).unsqueeze(0).lt(in.lengths.unsqueeze(1)).view(
      {B, 1, 1, in.context});
  rows.q_rows = at::arange(B, in.lengths.options());
  const at::Tensor cos = rope_cos_.index_select(0, in.positions), sin = rope_sin_.index_select(0, in.positions);
  at::Tensor x = embed_tokens_.index_select(0, in.ids);
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& l = layers_[li];
    const int64_t L = static_cast<int64_t>(li);
    at::Tensor h = RmsNorm(x, l.input_norm, c.rms_norm_eps);
    const std::vector<at::Tensor> qkv = FixedProject(h, l.qkv, L, in.tables);
    const at::Tensor q = ApplyRope(qkv[0].view({B, c.num_heads, c.head_dim}), cos, sin);
    const at::Tensor k = ApplyRope(qkv[1].view({B, c.num_kv_heads, c.head_dim}), cos, sin);
    at::Tensor& kc = kv.k(L);
    at::Tensor& vc = kv.v(L);
    kc.index_copy_(0, in.write_slots, k);
    vc.index_copy_(0, in.write_slots, qkv[2].view({B, c.num_kv_heads, c.head_dim}));
    at::Tensor attn = at::empty({B, c.num_heads, c.head_dim}, q.options());
    GatheredDecodeAttention(q, kc, vc, rows, scale, attn);
    x = x + FixedProject(attn.view({B, c.num_heads * c.head_dim}), l.o, L, in.tables)[0];
    h = RmsNorm(x, l.post_attention_norm, c.rms_norm_eps);
    const std::vector<at::Tensor> gate_up = FixedProject(h, l.gate_up, L, in.tables);
    x = x + FixedProject(at::silu(gate_up[0]) * gate_up[1], l.down, L, in.tables)[0];
  }
  const at::Tensor normed = RmsNorm(x, final_norm_, c.rms_norm_eps);
  return Linear(normed, lm_head_, at::Tensor(), options_.skinny_rows, lm_head_packed_).to(at::kFloat);
}

}  // namespace adapterd::model
