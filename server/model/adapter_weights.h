// The model's view of one adapter: LoRA deltas, IA3 vectors, bottleneck
// modules or prompt-tuning embeddings, and the whole modules, rows and
// biases a LoRA may bring along (heads, embeddings, trainable tokens).
#ifndef ADAPTERD_SERVER_MODEL_ADAPTER_WEIGHTS_H_
#define ADAPTERD_SERVER_MODEL_ADAPTER_WEIGHTS_H_

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "server/model/lora_row_kernel.h"

namespace adapterd::model {

// The seven linear projections of a decoder layer an adapter may target.
enum class Proj : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumProj = 7;
// "self_attn.q_proj", ..., "mlp.down_proj": the module path inside a layer.
std::string_view ProjPath(Proj p);
// "q_proj", ..., "down_proj".
std::string_view ProjName(Proj p);

// y += scale * (x A^T) B^T; with DoRA, y is also rescaled per output feature
// (PEFT: y + (m - 1) * (y - bias) + m * scale * x A^T B^T).
// A and B are stored transposed and contiguous (a_t = A^T, b_t = B^T), the
// layout the forward pass reads row by row; `a` and `b` are views of them in
// PEFT's orientation. Build one with LoraModule::FromPeft.
struct LoraModule {
  at::Tensor a_t;         // [in, r], contiguous
  at::Tensor b_t;         // [r, out], contiguous
  at::Tensor a;           // [r, in] view of a_t
  at::Tensor b;           // [out, r] view of b_t
  double scale = 1.0;     // lora_alpha / r, or / sqrt(r) with rsLoRA
  at::Tensor dora_scale;  // [out] = magnitude / ||W + scale B A||_row; undefined without DoRA
  // What the CPU row kernels (lora_row_kernel.h) read, taken from the
  // tensors above when the module is placed into an AdapterWeights (Set,
  // AddComposed), which never changes it after. A decode step reads it for
  // every row's module: the tensors' own fields would cost it two dependent
  // cache misses each (the tensor, then its storage). `ok` is false where
  // the kernels cannot read the module (not on the CPU, A and B of
  // different dtypes, a dtype they lack, or DoRA magnitudes not float32).
  struct RowView {
    const void* a_t = nullptr;          // [in, rank] elements of `type`
    const void* b_t = nullptr;          // [rank, out] elements of `type`
    const float* dora_scale = nullptr;  // [out], or null without DoRA
    int64_t rank = 0;
    LoraWeightType type = LoraWeightType::kF32;
    bool ok = false;
  };
  RowView row;
  int64_t rank() const { return a_t.size(1); }
  // Fills `row` from the tensors.
  void FillRowView();
  // From PEFT's lora_A [r, in] and lora_B [out, r].
  static LoraModule FromPeft(const at::Tensor& lora_a, const at::Tensor& lora_b, double scale);
};

// IA3 (PEFT): a learned vector that rescales one projection. Feed-forward
// modules scale the projection's input (y = W (x * l)); the others scale its
// output, bias included (y = (W x + b) * l).
struct Ia3Module {
  at::Tensor scale;  // [in] when scales_input, else [out]
  bool scales_input = false;
};

// Where a bottleneck adapter sits in a decoder layer (AdapterHub names):
// after the attention block ("mh_adapter") or after the MLP ("output_adapter").
enum class BottleneckLocation : int { kAttention = 0, kOutput = 1 };
inline constexpr int kNumBottleneckLocations = 2;

enum class Activation { kRelu, kGelu, kGeluTanh, kSilu, kTanh, kSigmoid, kLeakyRelu, kIdentity };

// A bottleneck adapter at one location (AdapterHub `adapters`, Houlsby and
// Pfeiffer). With h the sublayer's output and x its residual input:
//   sequential: z = original_ln_before ? h + x : h, res = residual_before_ln ? h : z,
//               o = up(act(down(LN_before(z)))) * scaling,
//               o = adapter_residual_before_ln ? LN_after(o + res) : LN_after(o) + res,
//               out = original_ln_after ? o + x : o
//   parallel:   o = LN_after(up(act(down(LN_before(x)))) * scaling),
//               out = o + h + (original_ln_after ? x : 0)
// The LayerNorms are optional (undefined tensors when absent).
struct BottleneckModule {
  at::Tensor down_t;  // [hidden, m], contiguous
  at::Tensor down_b;  // [m]
  at::Tensor up_t;    // [m, hidden], contiguous
  at::Tensor up_b;    // [hidden]
  at::Tensor ln_before_w, ln_before_b, ln_after_w, ln_after_b;  // [hidden]
  at::Tensor scaling_t;  // [1] ("learned") or [hidden] ("channel"); else `scaling`
  double scaling = 1.0;
  Activation act = Activation::kRelu;
  bool parallel = false;
  bool original_ln_before = true;
  bool original_ln_after = true;
  bool residual_before_ln = true;
  bool adapter_residual_before_ln = false;
  int64_t bottleneck() const { return down_t.size(1); }
};

// LoRA on the input embedding (PEFT's lora_embedding_A [r, vocab] and
// lora_embedding_B [hidden, r]): the embedding of token t gains
// scale * A^T[t] B^T. Stored as the rows gathered per token.
struct EmbeddingLora {
  at::Tensor a_rows;  // [vocab, r] = A^T, contiguous
  at::Tensor b_t;     // [r, hidden] = B^T, contiguous
  double scale = 1.0;
  int64_t rank() const { return b_t.size(0); }
};

// Rows of the embedding or of the LM head that an adapter replaces (PEFT's
// trainable tokens): row ids[i] becomes rows[i]; every other row stays the
// base's.
struct TokenRows {
  std::vector<int64_t> ids;  // ascending, distinct
  at::Tensor index;          // int64 [n]: `ids` on the rows' device
  at::Tensor rows;           // [n, hidden]
  bool empty() const { return ids.empty(); }
  // The position of `id` in `ids`, or -1.
  int64_t Find(int64_t id) const;
};

// LLaMA-Adapter (PEFT ADAPTION_PROMPT) in one layer: the adaption prompt's
// keys and values, computed once through the base's k_proj/v_proj (no
// RoPE) and repeated to every query head, and the learned gate. A row of the
// adapter adds o_proj(gate * softmax(q k^T / sqrt(head_dim)) v) to its
// attention output, the softmax taken over the prompt alone, in float32.
struct AdaptionPromptModule {
  at::Tensor k_t;   // [num_heads, head_dim, adapter_len], contiguous
  at::Tensor v;     // [num_heads, adapter_len, head_dim], contiguous
  at::Tensor gate;  // [1]
  int64_t length() const { return v.size(1); }
};

// Which family of weights an adapter carries; one adapter has one kind.
enum class AdapterKind { kLora, kIa3, kBottleneck, kPromptTuning, kPrefixTuning, kAdaptionPrompt };

// Immutable weights of one adapter, shared read-only by every sequence that
// uses it (the model never merges them into the base). Built once by a
// loader; thread-safe after that. Each object has an instance id that no
// other object of the process ever gets: caches of derived state (KV blocks
// computed through the adapter) key on it, so a replaced adapter's state is
// never mistaken for its successor's. Owned through shared_ptr, so such a
// cache may hold a weak reference and see when the weights are gone.
class AdapterWeights : public std::enable_shared_from_this<AdapterWeights> {
 public:
  AdapterWeights(int64_t num_layers, AdapterKind kind = AdapterKind::kLora);

  AdapterKind kind() const { return kind_; }
  uint64_t instance_id() const { return instance_id_; }
  int64_t num_layers() const { return static_cast<int64_t>(modules_.size()); }

  const LoraModule* Find(int64_t layer, Proj p) const {
    const LoraModule& m = modules_[layer][static_cast<int>(p)];
    return m.a_t.defined() ? &m : nullptr;
  }
  void Set(int64_t layer, Proj p, LoraModule m) {
    m.FillRowView();
    modules_[layer][static_cast<int>(p)] = std::move(m);
  }

  // Every LoRA module that projection `p` of `layer` applies, each adding
  // its own delta: the adapter's own module (Find), or for a composite (see
  // composed()) its components' modules in order; empty when none.
  std::span<const LoraModule> Loras(int64_t layer, Proj p) const {
    if (!composed_.empty()) return composed_[layer][static_cast<int>(p)];
    const LoraModule& m = modules_[layer][static_cast<int>(p)];
    return m.a_t.defined() ? std::span<const LoraModule>(&m, 1) : std::span<const LoraModule>();
  }
  // Moves the A and B of every LoRA module on the CPU into one region of
  // their own (HugePageBytes), each tensor on a 64-byte boundary, in the
  // order a step reads them: layer by layer, and in each layer group by
  // group of the projections that read one input (q/k/v, o, gate/up,
  // down), the group's A's, then its B's. The values do not change. A
  // loader calls it once, before the weights are shared; a composite's
  // modules are its components' and stay where they are. May throw (call
  // inside TorchCall).
  void PackLoras();

  // Ask for the cache lines Loras(layer, p) reads: PrefetchHeader the
  // object's first two lines, PrefetchLoras the modules themselves. A step
  // calls the first for every segment, then the second, so that the misses
  // of many adapters are in flight at once instead of one after another.
  void PrefetchHeader() const {
    __builtin_prefetch(this);
    __builtin_prefetch(reinterpret_cast<const char*>(this) + 64);
  }
  void PrefetchLoras(int64_t layer, Proj p) const {
    if (!composed_.empty()) {
      const std::vector<LoraModule>& v = composed_[layer][static_cast<int>(p)];
      if (!v.empty()) __builtin_prefetch(v.data());
      return;
    }
    const LoraModule* m = &modules_[layer][static_cast<int>(p)];
    __builtin_prefetch(m);
    __builtin_prefetch(reinterpret_cast<const char*>(m) + 64);
  }
  // Composition (server/model/composed_lease.h): appends a module to the
  // ones Loras(layer, p) gives. Its tensors are the component adapter's own
  // (shared, not copied), with the weight folded into its scale. A
  // composite holds nothing but such modules; Find() gives null for it.
  void AddComposed(int64_t layer, Proj p, LoraModule m) {
    if (composed_.empty()) composed_.resize(modules_.size());
    m.FillRowView();
    composed_[layer][static_cast<int>(p)].push_back(std::move(m));
  }
  bool composed() const { return !composed_.empty(); }

  const Ia3Module* FindIa3(int64_t layer, Proj p) const {
    if (!has_ia3_) return nullptr;
    const Ia3Module& m = ia3_[layer][static_cast<int>(p)];
    return m.scale.defined() ? &m : nullptr;
  }
  void SetIa3(int64_t layer, Proj p, Ia3Module m) {
    has_ia3_ = has_ia3_ || m.scale.defined();
    ia3_[layer][static_cast<int>(p)] = std::move(m);
  }

  const BottleneckModule* FindBottleneck(int64_t layer, BottleneckLocation loc) const {
    if (!has_bottlenecks_) return nullptr;
    const BottleneckModule& m = bottlenecks_[layer][static_cast<int>(loc)];
    return m.down_t.defined() ? &m : nullptr;
  }
  void SetBottleneck(int64_t layer, BottleneckLocation loc, BottleneckModule m) {
    has_bottlenecks_ = has_bottlenecks_ || m.down_t.defined();
    bottlenecks_[layer][static_cast<int>(loc)] = std::move(m);
  }

  // Prompt tuning: [num_virtual_tokens, hidden] embeddings that take the
  // place of the first positions of every sequence using the adapter.
  const at::Tensor& prompt() const { return prompt_; }
  void SetPrompt(at::Tensor p) { prompt_ = std::move(p); }
  // Positions a sequence of this adapter has before its prompt: prompt
  // tuning's virtual tokens, or prefix tuning's prefix.
  int64_t num_virtual_tokens() const {
    return prompt_.defined() ? prompt_.size(0) : num_prefix_tokens();
  }

  // Prefix tuning: finished keys and values of `num_prefix_tokens` positions
  // that precede every sequence of the adapter in every layer, shaped
  // [num_layers, 2 (key, value), num_prefix_tokens, num_kv_heads, head_dim]
  // in the model's dtype (no RoPE, as PEFT passes them to the attention).
  const at::Tensor& prefix_kv() const { return prefix_kv_; }
  void SetPrefixKv(at::Tensor kv) { prefix_kv_ = std::move(kv); }
  int64_t num_prefix_tokens() const { return prefix_kv_.defined() ? prefix_kv_.size(2) : 0; }

  // LLaMA-Adapter: the module of `layer`, or null where the layer has none.
  const AdaptionPromptModule* FindAdaptionPrompt(int64_t layer) const {
    if (!has_adaption_) return nullptr;
    const AdaptionPromptModule& m = adaption_[layer];
    return m.v.defined() ? &m : nullptr;
  }
  void SetAdaptionPrompt(int64_t layer, AdaptionPromptModule m) {
    has_adaption_ = has_adaption_ || m.v.defined();
    adaption_[layer] = std::move(m);
  }

  // Per-projection bias deltas [out] (trained biases, PEFT's bias "all" and
  // "lora_only", and scale * lora_B.bias): added to the projection's output
  // rows. Null where the adapter leaves the bias alone.
  const at::Tensor* FindBiasDelta(int64_t layer, Proj p) const {
    if (!has_bias_deltas_) return nullptr;
    const at::Tensor& t = bias_deltas_[layer][static_cast<int>(p)];
    return t.defined() ? &t : nullptr;
  }
  void SetBiasDelta(int64_t layer, Proj p, at::Tensor delta) {
    has_bias_deltas_ = has_bias_deltas_ || delta.defined();
    bias_deltas_[layer][static_cast<int>(p)] = std::move(delta);
  }

  // Whole modules (PEFT modules_to_save): [vocab, hidden] copies that take
  // the place of the base's embedding or LM head for this adapter's rows;
  // undefined when the adapter uses the base's.
  const at::Tensor& embed_tokens() const { return embed_tokens_; }
  void SetEmbedTokens(at::Tensor t) { embed_tokens_ = std::move(t); }
  const at::Tensor& lm_head() const { return lm_head_; }
  void SetLmHead(at::Tensor t) { lm_head_ = std::move(t); }
  // Trainable tokens: single rows of the embedding and of the LM head.
  const TokenRows& embed_token_rows() const { return embed_token_rows_; }
  void SetEmbedTokenRows(TokenRows r) { embed_token_rows_ = std::move(r); }
  const TokenRows& head_token_rows() const { return head_token_rows_; }
  void SetHeadTokenRows(TokenRows r) { head_token_rows_ = std::move(r); }
  const EmbeddingLora* FindEmbeddingLora() const { return embedding_lora_.b_t.defined() ? &embedding_lora_ : nullptr; }
  void SetEmbeddingLora(EmbeddingLora m) { embedding_lora_ = std::move(m); }
  // Whether a token's input embedding differs from the base's.
  bool ChangesEmbedding() const {
    return embed_tokens_.defined() || !embed_token_rows_.empty() || embedding_lora_.b_t.defined();
  }

  // A sequence-classification head [num_labels, hidden] (PEFT SEQ_CLS,
  // `score`): such an adapter classifies, pooling the last token, instead
  // of generating. Undefined for causal-LM adapters.
  const at::Tensor& classifier() const { return classifier_; }
  void SetClassifier(at::Tensor t) { classifier_ = std::move(t); }
  bool is_classifier() const { return classifier_.defined(); }
  int64_t num_labels() const { return classifier_.defined() ? classifier_.size(0) : 0; }

  // Bytes held by the adapter's tensors; a composite's modules are views of
  // its components' tensors and are not counted. The same whether or not
  // the LoRA modules sit in a slot of a LoraSlotPool.
  int64_t bytes() const;

  // The LoraSlotPool slot the LoRA modules are views of, or -1 when they
  // hold their own tensors. KeepSlot() is the pool's: `handle` gives the
  // slot back when these weights are destroyed.
  int64_t pool_slot() const { return pool_slot_; }
  void KeepSlot(std::shared_ptr<const void> handle, int64_t slot) {
    slot_handle_ = std::move(handle);
    pool_slot_ = slot;
  }

 private:
  // Declared first, so destroyed last: the slot goes back to the pool after
  // the modules that view it are gone.
  std::shared_ptr<const void> slot_handle_;
  int64_t pool_slot_ = -1;
  AdapterKind kind_;
  uint64_t instance_id_;
  // Whether any module of each family is set: the Find functions answer
  // from these first, without touching the families' per-layer storage,
  // since a step asks them for every segment of every layer.
  bool has_ia3_ = false;
  bool has_bias_deltas_ = false;
  bool has_bottlenecks_ = false;
  bool has_adaption_ = false;
  // modules_ and composed_ sit next to the fields above, in the object's
  // first two cache lines (PrefetchLoras).
  std::vector<std::array<LoraModule, kNumProj>> modules_;
  // A composite's modules per layer and projection; empty otherwise.
  std::vector<std::array<std::vector<LoraModule>, kNumProj>> composed_;
  std::vector<std::array<Ia3Module, kNumProj>> ia3_;
  std::vector<std::array<BottleneckModule, kNumBottleneckLocations>> bottlenecks_;
  at::Tensor prompt_;
  at::Tensor prefix_kv_;
  std::vector<AdaptionPromptModule> adaption_;
  std::vector<std::array<at::Tensor, kNumProj>> bias_deltas_;
  at::Tensor embed_tokens_, lm_head_, classifier_;
  TokenRows embed_token_rows_, head_token_rows_;
  EmbeddingLora embedding_lora_;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_ADAPTER_WEIGHTS_H_
