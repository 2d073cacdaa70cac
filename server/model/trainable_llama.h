// A Llama forward pass that autograd differentiates, for training small
// models (the demo checkpoint and its LoRA adapters) on the CPU.
#ifndef ADAPTERD_SERVER_MODEL_TRAINABLE_LLAMA_H_
#define ADAPTERD_SERVER_MODEL_TRAINABLE_LLAMA_H_

#include <ATen/core/Tensor.h>

#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/adapter_weights.h"
#include "server/model/model_config.h"

namespace adapterd::model {

// Checkpoint tensors with their safetensors names.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The safetensors names of a LlamaForCausalLM without biases, in the order
// TrainableLlama takes its weights: the embeddings, then per layer the
// input norm, q/k/v/o, the post-attention norm, gate/up/down, then the final
// norm and lm_head.
std::vector<std::string> LlamaTensorNames(const ModelConfig& config);
// The shape of each tensor of LlamaTensorNames, in the same order.
std::vector<std::vector<int64_t>> LlamaTensorShapes(const ModelConfig& config);

// One projection's LoRA: y += scale * (x A^T) B^T, A [r, in], B [out, r].
struct LoraFactors {
  int64_t layer = 0;
  Proj proj = Proj::kQ;
  at::Tensor a, b;
  double scale = 1.0;
};

// TrainableLlama computes LlamaForCausalLM's logits for whole sequences
// (positions from 0, causal attention, the default RoPE) with ATen ops that
// record autograd graphs: the gradient of a loss reaches every weight and
// LoRA factor that requires one. It matches LlamaModel's forward up to
// float rounding.
//
// It holds handles to the tensors given (no copies): updating them in
// place, between forward passes, changes the model. Forward may run on
// several threads at once while nobody updates the tensors.
class TrainableLlama {
 public:
  // `weights` in LlamaTensorNames order, float32, with those shapes. Biases,
  // tied embeddings and RoPE scaling are refused (FAILED_PRECONDITION).
  static absl::StatusOr<TrainableLlama> Create(const ModelConfig& config, std::vector<at::Tensor> weights);

  // ids [B, T] (int64) -> float32 logits [B, T, vocab], with `lora` added
  // to its projections.
  at::Tensor Forward(const at::Tensor& ids, std::span<const LoraFactors> lora = {}) const;
  // The mean cross-entropy of predicting ids[:, t + 1] from ids[:, :t + 1],
  // for ids [B, T + 1].
  at::Tensor NextTokenLoss(const at::Tensor& ids, std::span<const LoraFactors> lora = {}) const;

 private:
  TrainableLlama() = default;
  at::Tensor Project(const at::Tensor& x, int64_t layer, Proj p,
                     const std::vector<const LoraFactors*>& lora) const;

  ModelConfig config_;
  std::vector<at::Tensor> weights_;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_TRAINABLE_LLAMA_H_
