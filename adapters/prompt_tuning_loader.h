// Reads PEFT prompt-tuning adapters and checks them against the base model.
#ifndef ADAPTERD_ADAPTERS_PROMPT_TUNING_LOADER_H_
#define ADAPTERD_ADAPTERS_PROMPT_TUNING_LOADER_H_

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "adapters/loaded_adapter.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

// An AdapterKindLoader for PEFT "PROMPT_TUNING". Requires
// num_virtual_tokens, a token_dim equal to the base's hidden size, one
// transformer submodule, and the single tensor `prompt_embeddings`
// [num_virtual_tokens, hidden] with finite values. The virtual tokens take
// positions 0..V-1 of every sequence that uses the adapter, as in PEFT's
// generate(). The summary's type is "prompt_tuning" with the number of
// virtual tokens. Errors name the file, key or tensor. Thread-safe.
absl::StatusOr<LoadedAdapter> LoadPromptTuning(const AdapterFiles& files, const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_PROMPT_TUNING_LOADER_H_
