// Reads PEFT prompt-tuning adapters and checks them against the base model.
#ifndef ADAPTERD_ADAPTERS_PROMPT_TUNING_LOADER_H_
#define ADAPTERD_ADAPTERS_PROMPT_TUNING_LOADER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

// Requires num_virtual_tokens, a token_dim equal to the base's hidden size,
// one transformer submodule, and the single tensor `prompt_embeddings`
// [num_virtual_tokens, hidden]. The virtual tokens take positions 0..V-1 of
// every sequence that uses the adapter, as in PEFT's generate(). Errors name
// the file, key or tensor. Thread-safe.
absl::StatusOr<std::shared_ptr<model::AdapterWeights>> LoadPromptTuning(const AdapterFiles& files,
                                                                         const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_PROMPT_TUNING_LOADER_H_
