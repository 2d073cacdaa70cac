// The frozen base model: Llama-family decoder (LlamaForCausalLM, Qwen2ForCausalLM).
#ifndef ADAPTERD_SERVER_MODEL_LLAMA_MODEL_H_
#define ADAPTERD_SERVER_MODEL_LLAMA_MODEL_H_

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/adapter_heads.h"
#include "server/model/adapter_weights.h"
#include "server/model/delta_backend.h"
#include "server/model/kv_cache.h"
#include "server/model/lora_slot_pool.h"
#include "server/model/rms_norm.h"
#include "server/model/step_profile.h"
#include "server/model/model_config.h"

namespace adapterd::model {

class DecodeGraphs;
struct FixedDecodeInputs;

// How decode rows attend to the paged KV cache.
enum class DecodeAttention {
  // In place (PagedDecodeAttention) where the cache's device and dtype
  // allow it, the CPU; gathered elsewhere.
  kAuto,
  // Always gathered (GatheredDecodeAttention), the path of devices without
  // the in-place kernel; on the CPU, to test that path.
  kGathered,
};

// How steps whose every row decodes one token run (decode_graphs.h).
enum class DecodeSteps {
  // kGraphs on a CUDA device of a build that has graphs; kEager elsewhere.
  kAuto,
  // As they come, each step at its own shapes.
  kEager,
  // At fixed shapes per bucket, eagerly: the graphs' step without the
  // capture (on the CPU, to test it).
  kBuckets,
  // At fixed shapes, replayed from a CUDA graph per bucket; loading fails
  // where the build or the device has none.
  kGraphs,
};

struct ModelOptions {
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  c10::ScalarType dtype = c10::ScalarType::Float;
  DecodeAttention decode_attention = DecodeAttention::kAuto;
  // How adapter deltas are computed (delta_backend.h); kAuto takes the
  // CUDA kernels on a GPU that has them.
  DeltaBackendKind delta_backend = DeltaBackendKind::kAuto;
  // With adapter_slots > 0, a LoraSlotPool of that many slots of rank up to
  // adapter_slot_rank is allocated at load, and adapter loads place their
  // LoRA weights there (lora_slot_pool.h).
  int64_t adapter_slots = 0;
  int64_t adapter_slot_rank = 16;
  DecodeSteps decode_steps = DecodeSteps::kAuto;
  // The dtype LoRA and DoRA A and B matrices are kept in, whatever their
  // file's dtype: Undefined keeps the file's on a float32 CPU base (half
  // precision is read widened) and takes the model's elsewhere. BFloat16 or
  // Half on a float32 CPU base rounds a float32 adapter as if it had been
  // saved so: half the bytes held and half the bytes each step reads.
  // Otherwise only the model's dtype is accepted.
  c10::ScalarType lora_dtype = c10::ScalarType::Undefined;
  // Base products of up to this many rows (decode steps of a few streams)
  // read each weight row once through SkinnyGemm on a CPU base (linear.h);
  // 0 sends every product to ATen, and a negative value takes
  // DefaultSkinnyRows(dtype) (options() then holds the value taken).
  int64_t skinny_rows = -1;
  // On the CPU, a prompt chunk whose rows read at most this many positions
  // of keys and values in all (n * context + n * (n + 1) / 2 for n new
  // tokens after `context` cached ones) attends in place, each token as a
  // decode row with its causal context (step_layout.h); longer chunks go
  // through SDPA. 0 sends every chunk to SDPA.
  int64_t in_place_prompt_positions = 1024;
  // On a float32 CPU model, keep a second copy of the base's projection and
  // LM head weights in oneDNN's blocked layout, made once at load
  // (PackLinearWeight, linear.h), for the products that SkinnyGemm does not
  // take: they then skip the packing that at::linear does on every call.
  // Costs the size of those weights again in memory. Ignored in other
  // dtypes and where LibTorch has no oneDNN.
  bool prepack_weights = true;
};

// One sequence's share of a forward step: `num_tokens` new tokens that follow
// `context_len` tokens already in the KV cache.
struct SequenceChunk {
  int64_t num_tokens = 0;
  int64_t context_len = 0;
  const std::vector<int32_t>* block_table = nullptr;  // covers context_len + num_tokens
  bool wants_logits = false;  // produce logits for the chunk's last token
  // With wants_logits: the chunk's last token is pooled through its
  // adapter's classification head instead of the LM head (the adapter must
  // have one).
  bool classify = false;
};

// A flat batch of tokens from many sequences, concatenated in `seqs` order.
// `adapters` is empty (base model only) or holds one entry per chunk (null =
// base). Chunks that share an adapter should be adjacent: each run of equal
// adapters costs one delta product per projection, whatever its length.
struct ForwardBatch {
  std::vector<int64_t> token_ids;
  std::vector<SequenceChunk> seqs;
  std::vector<const AdapterWeights*> adapters;
  // When set, the pass adds where its time went (see StepProfile).
  StepProfile* profile = nullptr;
};

// Weights of the base model, loaded once and shared read-only by every
// request; nothing is copied per request or merged. Load() does all the
// expensive work (reading, validating and converting every tensor); after it
// the object is immutable, and Forward() may be called from one thread at a
// time (it writes the given KvCache).
class LlamaModel {
 public:
  // Loads <dir>/config.json and the safetensors weights. Every error names
  // the file and tensor involved; a weight that holds NaN or an infinity is
  // INVALID_ARGUMENT naming its first such index.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& dir,
                                                          const ModelOptions& options);
  ~LlamaModel();

  const ModelConfig& config() const { return config_; }
  // As given to Load(), with decode_steps resolved (never kAuto).
  const ModelOptions& options() const { return options_; }
  // Which DeltaBackend computes the adapter deltas (DeltaBackend::name()).
  const char* delta_backend_name() const;
  // The slot pool adapter loads place LoRA weights in; null without one
  // (ModelOptions::adapter_slots == 0). Thread-safe.
  LoraSlotPool* lora_slot_pool() const { return slot_pool_.get(); }
  // The fixed-shape decode steps (decode_graphs.h); null in DecodeSteps::kEager.
  const DecodeGraphs* decode_graphs() const { return decode_graphs_.get(); }
  // Bytes held by the weights (aliases of the checkpoint mapping included;
  // packed copies counted at their plain size).
  int64_t weight_bytes() const;
  // The frozen weight [out, in] of one projection (adapters validate against it).
  const at::Tensor& ProjWeight(int64_t layer, Proj p) const;
  // Its bias [out]; undefined when the base has none there.
  const at::Tensor& ProjBias(int64_t layer, Proj p) const;
  const at::Tensor& embed_tokens() const { return embed_tokens_; }  // [vocab, hidden]
  const at::Tensor& lm_head() const { return lm_head_; }            // [vocab, hidden]

  // Runs the chunks through the model, appending their keys and values to
  // `kv`. Returns the logits of the chunks with wants_logits that generate,
  // and the classification scores of those that classify, each in chunk
  // order (see ForwardOutput).
  absl::StatusOr<ForwardOutput> Run(const ForwardBatch& batch, KvCache& kv) const;
  // Run() for batches without classification chunks: float32 logits
  // [number of chunks with wants_logits, vocab], in chunk order.
  absl::StatusOr<at::Tensor> Forward(const ForwardBatch& batch, KvCache& kv) const;

 private:
  struct ProjGroup;
  struct Layer;
  using Segment = AdapterSegment;
  LlamaModel() = default;
  // base(x) plus every segment's adapter effect (DeltaBackend) for each
  // projection of group `g` of `layer`, as one GEMM where the inputs are
  // shared: one output per projection, in the group's order (column views
  // of one product). `prof` (may be null) gets the base product's time and
  // the adapters'.
  std::vector<at::Tensor> Project(const at::Tensor& x, const ProjGroup& g, int64_t layer,
                                  const std::vector<Segment>& segments, const DeltaStep* step,
                                  StepProfile* prof) const;
  // x + h after a sublayer, or for segments with a bottleneck adapter at
  // `loc`, that adapter's output.
  at::Tensor Residual(const at::Tensor& x, const at::Tensor& h, int64_t layer, BottleneckLocation loc,
                      const std::vector<Segment>& segments, StepProfile* prof) const;
  // Residual() and the RMSNorm (weight `norm`) of its result, in one pass
  // over the rows where no segment has a bottleneck adapter at `loc`.
  AddRmsNormResult ResidualNorm(const at::Tensor& x, const at::Tensor& h, int64_t layer, BottleneckLocation loc,
                                const std::vector<Segment>& segments, const at::Tensor& norm,
                                StepProfile* prof) const;
  ForwardOutput ForwardImpl(const ForwardBatch& batch, KvCache& kv) const;
  // o_proj of a layer's attention `attn` [T, heads, head_dim], with the
  // LLaMA-Adapter segments' gated prompt attention (over their rows of `q`)
  // added first.
  at::Tensor AttentionOutput(at::Tensor& attn, const at::Tensor& q, const Layer& l, int64_t layer,
                             const std::vector<Segment>& segments, const DeltaStep* delta_step,
                             StepProfile* prof) const;
  // The step DecodeGraphs runs (and captures): float32 logits [B, vocab].
  at::Tensor FixedDecodeStep(const FixedDecodeInputs& in, KvCache& kv) const;
  // Project() for a fixed-shape step: the adapters' deltas through `tables` (may be null).
  std::vector<at::Tensor> FixedProject(const at::Tensor& x, const ProjGroup& g, int64_t layer,
                                       const DeltaTables* tables) const;

  ModelConfig config_;
  ModelOptions options_;
  at::Tensor embed_tokens_;  // [vocab, hidden]
  at::Tensor final_norm_;    // [hidden]
  at::Tensor lm_head_;       // [vocab, hidden]; the embedding itself when tied
  at::Tensor lm_head_packed_;  // PackLinearWeight(lm_head_), or undefined
  at::Tensor rope_cos_;      // [max_positions, head_dim]
  at::Tensor rope_sin_;
  std::vector<Layer> layers_;
  std::unique_ptr<DeltaBackend> delta_backend_;
  std::unique_ptr<LoraSlotPool> slot_pool_;
  std::unique_ptr<DecodeGraphs> decode_graphs_;  // written only by the forward thread
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_LLAMA_MODEL_H_
