// What every kind's loader returns: the weights and their description.
#ifndef ADAPTERD_ADAPTERS_LOADED_ADAPTER_H_
#define ADAPTERD_ADAPTERS_LOADED_ADAPTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

// What a loaded adapter looks like, for listings. Fields that do not apply
// to the kind stay empty.
struct AdapterSummary {
  // "lora", "dora", "adalora", "ia3", "bottleneck", "prompt_tuning",
  // "prefix_tuning", "adaption_prompt".
  std::string type;
  // LoRA: distinct ranks (AdaLoRA: the ranks left after pruning), LoRA on
  // embed_tokens included.
  std::vector<int64_t> ranks;
  // LoRA, IA3: projection names, and "embed_tokens" for LoRA on it.
  std::vector<std::string> target_modules;
  std::vector<std::string> feedforward_modules;  // IA3: input-scaled projections
  std::vector<int64_t> bottleneck_widths;    // bottleneck: distinct widths
  std::vector<std::string> locations;        // bottleneck: "mh_adapter", "output_adapter"
  std::string non_linearity;                 // bottleneck
  bool parallel = false;                     // bottleneck
  int64_t num_virtual_tokens = 0;            // prompt tuning, prefix tuning
  int64_t adapter_len = 0;                   // LLaMA-Adapter
  int64_t adapter_layers = 0;                // LLaMA-Adapter
  // LoRA: "SEQ_CLS" for a sequence-classification adapter (it has a
  // classification head and serves Classify, not Generate), else "CAUSAL_LM".
  std::string task_type = "CAUSAL_LM";
  bool classifier() const { return task_type == "SEQ_CLS"; }
  // Classification: the label of each head row (id2label, else "0", "1", ...),
  // the pad token that pooling skips (-1: the base's, if any), and whether
  // the labels are independent (problem_type multi_label_classification:
  // sigmoid probabilities rather than softmax).
  std::vector<std::string> labels;
  int64_t pad_token_id = -1;
  bool multi_label = false;
  // LoRA: whole modules the adapter replaces ("embed_tokens", "lm_head",
  // "score"), the rows it replaces as trainable tokens, and its trained
  // biases ("none", "all", "lora_only"; lora_bias: lora_B has a bias).
  std::vector<std::string> modules_to_save;
  int64_t trainable_tokens = 0;
  std::string bias = "none";
  bool lora_bias = false;
};

struct LoadedAdapter {
  std::shared_ptr<model::AdapterWeights> weights;
  AdapterSummary summary;
};

// The loader of one adapter kind: parses the config, validates every tensor
// against the base (INVALID_ARGUMENT for malformed input, FAILED_PRECONDITION
// for an adapter that does not fit this base model; each names the file, key
// or tensor) and builds the weights in the base's dtype and device.
// Thread-safe (reads the base only).
using AdapterKindLoader = absl::StatusOr<LoadedAdapter> (*)(const AdapterFiles& files,
                                                           const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_LOADED_ADAPTER_H_
