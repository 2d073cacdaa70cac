#include "server/model/llama_model.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <optional>
#include <span>
#include <utility>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/common/torch_call.h"
#include "server/model/adapter_ops.h"
#include "server/model/checkpoint.h"
#include "server/model/lora_row_kernel.h"
#include "server/model/paged_attention.h"

namespace adapterd::model {

struct LlamaModel::Layer {
  at::Tensor input_norm, post_attention_norm;
  at::Tensor q, k, v, o;           // projection weights [out, in]
  at::Tensor q_b, k_b, v_b, o_b;   // biases; undefined when absent
  at::Tensor gate, up, down;
  at::Tensor gate_b, up_b, down_b;
};

LlamaModel::~LlamaModel() = default;

namespace {

std::optional<at::Tensor> Opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// LlamaRMSNorm / Qwen2RMSNorm: normalise in float32, scale in the model dtype.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor h = x.to(at::kFloat);
  at::Tensor var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(var + eps);
  return weight * h.to(x.scalar_type());
}

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

at::Tensor SlotsTensor(const std::vector<int64_t>& slots) {
  return at::tensor(at::ArrayRef<int64_t>(slots), at::TensorOptions().dtype(at::kLong));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& dir,
                                                             const ModelOptions& options) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromDirectory(dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) return ckpt.status();
  (*ckpt)->Prefault();

  auto model = std::unique_ptr<LlamaModel>(new LlamaModel());
  model->config_ = *config;
  model->options_ = options;
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
    l.q = get(p + "self_attn.q_proj.weight", {q_out, H});
    l.k = get(p + "self_attn.k_proj.weight", {kv_out, H});
    l.v = get(p + "self_attn.v_proj.weight", {kv_out, H});
    l.o = get(p + "self_attn.o_proj.weight", {H, q_out});
    if (c.attention_bias) {
      l.q_b = get(p + "self_attn.q_proj.bias", {q_out});
      l.k_b = get(p + "self_attn.k_proj.bias", {kv_out});
      l.v_b = get(p + "self_attn.v_proj.bias", {kv_out});
    }
    if (c.o_proj_bias) l.o_b = get(p + "self_attn.o_proj.bias", {H});
    l.gate = get(p + "mlp.gate_proj.weight", {I, H});
    l.up = get(p + "mlp.up_proj.weight", {I, H});
    l.down = get(p + "mlp.down_proj.weight", {H, I});
    if (c.mlp_bias) {
      l.gate_b = get(p + "mlp.gate_proj.bias", {I});
      l.up_b = get(p + "mlp.up_proj.bias", {I});
      l.down_b = get(p + "mlp.down_proj.bias", {H});
    }
    model->layers_.push_back(std::move(l));
  }
  if (!status.ok()) return status;
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
  return model;
}

int64_t LlamaModel::weight_bytes() const {
  int64_t total = embed_tokens_.nbytes() + final_norm_.nbytes();
  if (!lm_head_.is_same(embed_tokens_)) total += lm_head_.nbytes();
  for (const Layer& l : layers_) {
    for (const at::Tensor* t : {&l.input_norm, &l.post_attention_norm, &l.q, &l.k, &l.v, &l.o,
                                &l.q_b, &l.k_b, &l.v_b, &l.o_b, &l.gate, &l.up, &l.down,
                                &l.gate_b, &l.up_b, &l.down_b}) {
      if (t->defined()) total += t->nbytes();
    }
  }
  return total;
}

const at::Tensor& LlamaModel::ProjBias(int64_t layer, Proj p) const {
  const Layer& l = layers_[layer];
  switch (p) {
    case Proj::kQ: return l.q_b;
    case Proj::kK: return l.k_b;
    case Proj::kV: return l.v_b;
    case Proj::kO: return l.o_b;
    case Proj::kGate: return l.gate_b;
    case Proj::kUp: return l.up_b;
    case Proj::kDown: return l.down_b;
  }
  return l.q_b;
}

const at::Tensor& LlamaModel::ProjWeight(int64_t layer, Proj p) const {
  const Layer& l = layers_[layer];
  switch (p) {
    case Proj::kQ: return l.q;
    case Proj::kK: return l.k;
    case Proj::kV: return l.v;
    case Proj::kO: return l.o;
    case Proj::kGate: return l.gate;
    case Proj::kUp: return l.up;
    case Proj::kDown: return l.down;
  }
  return l.q;
}

namespace {

// Rows at or below this count per segment take the direct loop below rather
// than two ATen matmuls: in decode steps each segment is one or a few rows,
// where per-call overhead, not arithmetic, dominates.
constexpr int64_t kSmallSegmentRows = 8;

// How LoraRow reads the module's weights (fp32, or half precision kept on a
// fp32 base); nullopt when it cannot.
std::optional<LoraWeightType> RowWeightType(const LoraModule& m) {
  if (!m.a_t.device().is_cpu() || m.b_t.scalar_type() != m.a_t.scalar_type()) return std::nullopt;
  if (m.dora_scale.defined() && (m.dora_scale.scalar_type() != at::kFloat || !m.dora_scale.is_contiguous())) {
    return std::nullopt;
  }
  switch (m.a_t.scalar_type()) {
    case at::kFloat: return LoraWeightType::kF32;
    case at::kHalf: return LoraWeightType::kF16;
    case at::kBFloat16: return LoraWeightType::kBF16;
    default: return std::nullopt;
  }
}

// y_row (+)= delta for one row, where delta = scale * (x_row A^T) B^T, with
// A^T = a_t [in, r] and B^T = b_t [r, out] contiguous (see lora_row_kernel.h).
// With DoRA,
// y_row = y_row + (m - 1) (y_row - bias) + m * delta. `tmp` holds r floats,
// `delta` out floats.
void LoraRow(const float* x, float* y, int64_t in, int64_t out, const LoraModule& m,
             LoraWeightType type, const float* bias, float* tmp, float* delta) {
  const int64_t r = m.rank();
  LoraShrinkRow(x, m.a_t.data_ptr(), type, in, r, static_cast<float>(m.scale), tmp);
  if (!m.dora_scale.defined()) {
    LoraExpandRow(tmp, m.b_t.data_ptr(), type, r, out, y);
    return;
  }
  std::fill(delta, delta + out, 0.0f);
  LoraExpandRow(tmp, m.b_t.data_ptr(), type, r, out, delta);
  const float* mag = m.dora_scale.data_ptr<float>();
  for (int64_t o = 0; o < out; ++o) {
    const float base = bias != nullptr ? y[o] - bias[o] : y[o];
    y[o] += (mag[o] - 1.0f) * base + mag[o] * delta[o];
  }
}

// Whether every module can take the direct row loop.
bool RowCapable(std::span<const LoraModule> modules) {
  return std::all_of(modules.begin(), modules.end(),
                     [](const LoraModule& m) { return RowWeightType(m).has_value(); });
}

// ys (+)= m's delta for the rows xs, with two ATen matmuls (see LoraRow).
void AddLoraDelta(const at::Tensor& xs, at::Tensor ys, const LoraModule& m, const at::Tensor& bias) {
  // Weights kept in half precision on a fp32 base are widened (exactly).
  const auto widened = [&](const at::Tensor& w) {
    return w.scalar_type() == xs.scalar_type() ? w : w.to(xs.scalar_type());
  };
  at::Tensor delta = at::mm(at::mm(xs, widened(m.a_t)), widened(m.b_t));
  if (m.dora_scale.defined()) {
    at::Tensor base = bias.defined() ? ys - bias : ys;
    ys.add_((m.dora_scale - 1) * base + m.dora_scale * (delta * m.scale));
  } else {
    ys.add_(delta, m.scale);
  }
}

// A segment of at most kSmallSegmentRows rows and the LoRA modules its
// adapter applies at one projection (one, or one per component of a
// composite).
struct SmallSegment {
  const AdapterSegment* segment;
  std::span<const LoraModule> modules;
};

// y (+)= every small segment's deltas, row by row with LoraRow. Segments own
// disjoint rows, so they run in parallel without locks. x and y are float32,
// or bfloat16 widened to float32 one row at a time and rounded back once
// after all of the row's modules.
void AddSmallSegments(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias,
                      const std::vector<SmallSegment>& small) {
  const int64_t in = x.size(1), out = y.size(1);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const at::Tensor bias_f = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
  const float* bp = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
  at::parallel_for(0, static_cast<int64_t>(small.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> tmp, delta(static_cast<size_t>(out));
    std::vector<float> xrow(bf16 ? static_cast<size_t>(in) : 0), yrow(bf16 ? static_cast<size_t>(out) : 0);
    for (int64_t i = begin; i < end; ++i) {
      const AdapterSegment& s = *small[i].segment;
      for (int64_t row = s.start; row < s.start + s.rows; ++row) {
        const float* xr = nullptr;
        float* yr = nullptr;
        if (bf16) {
          const c10::BFloat16* xs = x.data_ptr<c10::BFloat16>() + row * in;
          const c10::BFloat16* ys = y.data_ptr<c10::BFloat16>() + row * out;
          for (int64_t k = 0; k < in; ++k) xrow[k] = static_cast<float>(xs[k]);
          for (int64_t k = 0; k < out; ++k) yrow[k] = static_cast<float>(ys[k]);
          xr = xrow.data();
          yr = yrow.data();
        } else {
          xr = x.data_ptr<float>() + row * in;
          yr = y.data_ptr<float>() + row * out;
        }
        for (const LoraModule& m : small[i].modules) {
          tmp.resize(static_cast<size_t>(m.rank()));
          LoraRow(xr, yr, in, out, m, *RowWeightType(m), bp, tmp.data(), delta.data());
        }
        if (bf16) {
          c10::BFloat16* yd = y.data_ptr<c10::BFloat16>() + row * out;
          for (int64_t k = 0; k < out; ++k) yd[k] = c10::BFloat16(yrow[k]);
        }
      }
    }
  });
}

}  // namespace

at::Tensor LlamaModel::Project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                               int64_t layer, Proj p, const std::vector<Segment>& segments,
                               StepProfile* prof) const {
  double* const gemm_time = prof != nullptr ? &prof->gemm : nullptr;
  double* const adapter_time = prof != nullptr ? &prof->adapters : nullptr;
  if (segments.empty()) {
    ScopedTimer timer(gemm_time);
    return at::linear(x, w, Opt(bias));
  }
  // IA3 on a feed-forward module scales its segment's input rows, on any
  // other module its output rows; the base product still runs once.
  at::Tensor in = x;
  {
    ScopedTimer timer(adapter_time);
    for (const Segment& s : segments) {
      const Ia3Module* m = s.adapter->FindIa3(layer, p);
      if (m == nullptr || !m->scales_input) continue;
      if (in.is_same(x)) in = x.clone();
      in.narrow(0, s.start, s.rows).mul_(m->scale);
    }
  }
  at::Tensor y;
  {
    ScopedTimer timer(gemm_time);
    y = at::linear(in, w, Opt(bias));
  }
  ScopedTimer timer(adapter_time);
  for (const Segment& s : segments) {
    const Ia3Module* m = s.adapter->FindIa3(layer, p);
    if (m != nullptr && !m->scales_input) y.narrow(0, s.start, s.rows).mul_(m->scale);
    // Trained biases: the base's bias is in y, the adapter's difference is added.
    if (const at::Tensor* d = s.adapter->FindBiasDelta(layer, p)) y.narrow(0, s.start, s.rows).add_(*d);
  }
  // Small segments take the direct row loop (AddSmallSegments).
  const bool direct = x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) &&
                      x.is_contiguous() &&
                      y.is_contiguous() && (!bias.defined() || bias.is_contiguous());
  // Each segment adds the delta of every LoRA module its adapter applies
  // here: one for an adapter, one per component for a composite.
  std::vector<SmallSegment> small;
  for (const Segment& s : segments) {
    const std::span<const LoraModule> modules = s.adapter->Loras(layer, p);
    if (modules.empty()) continue;
    if (direct && s.rows <= kSmallSegmentRows && RowCapable(modules)) {
      small.push_back({&s, modules});
      continue;
    }
    for (const LoraModule& m : modules) {
      AddLoraDelta(x.narrow(0, s.start, s.rows), y.narrow(0, s.start, s.rows), m, bias);
    }
  }
  if (!small.empty()) AddSmallSegments(x, y, bias, small);
  return y;
}

at::Tensor LlamaModel::Residual(const at::Tensor& x, const at::Tensor& h, int64_t layer,
                               BottleneckLocation loc, const std::vector<Segment>& segments,
                               StepProfile* prof) const {
  at::Tensor out = x + h;
  ScopedTimer timer(prof != nullptr && !segments.empty() ? &prof->adapters : nullptr);
  for (const Segment& s : segments) {
    const BottleneckModule* m = s.adapter->FindBottleneck(layer, loc);
    if (m == nullptr) continue;
    out.narrow(0, s.start, s.rows)
        .copy_(BottleneckForward(*m, h.narrow(0, s.start, s.rows), x.narrow(0, s.start, s.rows)));
  }
  return out;
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
  const ModelConfig& c = config_;
  const int64_t T = static_cast<int64_t>(batch.token_ids.size());
  const int64_t bs = kv.block_size();
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));

  // Per-token positions and cache slots; per-sequence slots of the whole context.
  std::vector<int64_t> positions, write_slots, logit_rows;
  std::vector<HeadRow> heads;
  std::vector<at::Tensor> read_slots;
  std::vector<DecodeRow> decode_rows;
  // Decode rows read the cache in place (PagedDecodeAttention) on the CPU
  // in float32 and bfloat16; elsewhere every row gathers its context.
  const at::Tensor& k0 = kv.k(0);
  const bool paged_decode = k0.device().is_cpu() && (k0.scalar_type() == at::kFloat || k0.scalar_type() == at::kBFloat16);
  positions.reserve(T);
  write_slots.reserve(T);
  int64_t offset = 0;
  for (const SequenceChunk& s : batch.seqs) {
    const std::vector<int32_t>& table = *s.block_table;
    auto slot = [&](int64_t p) { return static_cast<int64_t>(table[p / bs]) * bs + p % bs; };
    for (int64_t i = 0; i < s.num_tokens; ++i) {
      positions.push_back(s.context_len + i);
      write_slots.push_back(slot(s.context_len + i));
    }
    if (s.num_tokens == 1) decode_rows.push_back({s.block_table, s.context_len + 1, offset});
    if (s.num_tokens == 1 && paged_decode) {
      read_slots.emplace_back();  // read in place: nothing gathered
    } else {
      std::vector<int64_t> ctx_slots;
      ctx_slots.reserve(s.context_len + s.num_tokens);
      for (int64_t p = 0; p < s.context_len + s.num_tokens; ++p) ctx_slots.push_back(slot(p));
      read_slots.push_back(SlotsTensor(ctx_slots).to(options_.device));
    }
    offset += s.num_tokens;
    if (s.wants_logits) {
      logit_rows.push_back(offset - 1);
      const size_t i = read_slots.size() - 1;
      heads.push_back({batch.adapters.empty() ? nullptr : batch.adapters[i], s.classify});
    }
  }
  // Row ranges that run through the same adapter.
  std::vector<Segment> segments;
  if (!batch.adapters.empty()) {
    int64_t row = 0;
    for (size_t i = 0; i < batch.seqs.size(); ++i) {
      const AdapterWeights* a = batch.adapters[i];
      if (a != nullptr) {
        if (!segments.empty() && segments.back().adapter == a &&
            segments.back().start + segments.back().rows == row) {
          segments.back().rows += batch.seqs[i].num_tokens;
        } else {
          segments.push_back({row, batch.seqs[i].num_tokens, a});
        }
      }
      row += batch.seqs[i].num_tokens;
    }
  }
  const auto dev = at::TensorOptions().device(options_.device);
  at::Tensor ids = SlotsTensor(batch.token_ids).to(options_.device);
  at::Tensor pos = SlotsTensor(positions).to(options_.device);
  at::Tensor wslots = SlotsTensor(write_slots).to(options_.device);
  at::Tensor cos = rope_cos_.index_select(0, pos), sin = rope_sin_.index_select(0, pos);

  // Causal masks for chunks that follow cached context ([n, ctx + n], bottom-right aligned).
  std::vector<std::optional<at::Tensor>> masks(batch.seqs.size());
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SequenceChunk& sc = batch.seqs[s];
    if (sc.num_tokens > 1 && sc.context_len > 0) {
      at::Tensor q_pos = at::arange(sc.num_tokens, dev.dtype(at::kLong)).unsqueeze(1) + sc.context_len;
      at::Tensor k_pos = at::arange(sc.context_len + sc.num_tokens, dev.dtype(at::kLong)).unsqueeze(0);
      masks[s] = k_pos <= q_pos;
    }
  }

  at::Tensor x = EmbedTokens(embed_tokens_, ids, batch.token_ids, segments);  // [T, H]
  // Prompt tuning: a sequence's first positions take its adapter's virtual
  // token embeddings instead of the placeholder ids the engine put there.
  if (!batch.adapters.empty()) {
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
  StepProfile* const prof = batch.profile;
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& l = layers_[li];
    at::Tensor h = RmsNorm(x, l.input_norm, c.rms_norm_eps);
    const int64_t L = static_cast<int64_t>(li);
    at::Tensor q = Project(h, l.q, l.q_b, L, Proj::kQ, segments, prof).view({T, c.num_heads, c.head_dim});
    at::Tensor k = Project(h, l.k, l.k_b, L, Proj::kK, segments, prof).view({T, c.num_kv_heads, c.head_dim});
    at::Tensor v = Project(h, l.v, l.v_b, L, Proj::kV, segments, prof).view({T, c.num_kv_heads, c.head_dim});
    std::optional<ScopedTimer> attention_timer(std::in_place, prof != nullptr ? &prof->attention : nullptr);
    q = ApplyRope(q, cos, sin);
    k = ApplyRope(k, cos, sin);
    at::Tensor& kc = kv.k(static_cast<int64_t>(li));
    at::Tensor& vc = kv.v(static_cast<int64_t>(li));
    kc.index_copy_(0, wslots, k);
    vc.index_copy_(0, wslots, v);

    at::Tensor attn = at::empty({T, c.num_heads, c.head_dim}, q.options());
    // Decode rows read the cache in place, all at once; prompt chunks gather
    // their context for one attention call each.
    const bool paged = paged_decode && !decode_rows.empty();
    if (paged) {
      const at::Tensor qc = q.contiguous();
      PagedDecodeAttention(qc, kc, vc, decode_rows, bs, scale, attn);
    }
    int64_t off = 0;
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const SequenceChunk& sc = batch.seqs[s];
      if (paged && sc.num_tokens == 1) {
        off += 1;
        continue;
      }
      at::Tensor qs = q.narrow(0, off, sc.num_tokens).transpose(0, 1);  // [nh, n, hd]
      at::Tensor ks = kc.index_select(0, read_slots[s]).transpose(0, 1);  // [nkv, L, hd]
      at::Tensor vs = vc.index_select(0, read_slots[s]).transpose(0, 1);
      const bool causal = sc.num_tokens > 1 && sc.context_len == 0;
      at::Tensor o = at::scaled_dot_product_attention(qs, ks, vs, masks[s], 0.0, causal, scale,
                                                      /*enable_gqa=*/c.num_heads != c.num_kv_heads);
      attn.narrow(0, off, sc.num_tokens).copy_(o.transpose(0, 1));
      off += sc.num_tokens;
    }
    attention_timer.reset();
    // LLaMA-Adapter: PEFT adds o_proj(gated prompt attention) to o_proj(attention);
    // o_proj is linear, so the sum goes through it once (its bias once more below).
    std::vector<const Segment*> adapted;
    std::optional<ScopedTimer> adapter_timer(std::in_place, prof != nullptr && !segments.empty() ? &prof->adapters : nullptr);
    for (const Segment& s : segments) {
      const AdaptionPromptModule* m = s.adapter->FindAdaptionPrompt(L);
      if (m == nullptr) continue;
      attn.narrow(0, s.start, s.rows).add_(AdaptionPromptAttention(*m, q.narrow(0, s.start, s.rows), scale));
      adapted.push_back(&s);
    }
    adapter_timer.reset();
    at::Tensor attn_out =
        Project(attn.view({T, c.num_heads * c.head_dim}), l.o, l.o_b, L, Proj::kO, segments, prof);
    if (l.o_b.defined()) {
      for (const Segment* s : adapted) attn_out.narrow(0, s->start, s->rows).add_(l.o_b);
    }
    x = Residual(x, attn_out, L, BottleneckLocation::kAttention, segments, prof);
    h = RmsNorm(x, l.post_attention_norm, c.rms_norm_eps);
    at::Tensor act = at::silu(Project(h, l.gate, l.gate_b, L, Proj::kGate, segments, prof)) *
                     Project(h, l.up, l.up_b, L, Proj::kUp, segments, prof);
    x = Residual(x, Project(act, l.down, l.down_b, L, Proj::kDown, segments, prof), L,
                 BottleneckLocation::kOutput, segments, prof);
  }
  if (logit_rows.empty()) return ForwardOutput{at::empty({0, c.vocab_size}, at::kFloat), {}};
  at::Tensor last = x.index_select(0, SlotsTensor(logit_rows).to(options_.device));
  at::Tensor normed = RmsNorm(last, final_norm_, c.rms_norm_eps);
  ScopedTimer head_timer(prof != nullptr ? &prof->gemm : nullptr);
  return ApplyHeads(normed, lm_head_, heads);
}

}  // namespace adapterd::model
