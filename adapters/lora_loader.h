// Reads PEFT LoRA/DoRA adapters and checks them against the base model.
#ifndef ADAPTERD_ADAPTERS_LORA_LOADER_H_
#define ADAPTERD_ADAPTERS_LORA_LOADER_H_

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "adapters/loaded_adapter.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

// An AdapterKindLoader for PEFT "LORA". Validates every tensor against the
// base (each maps to a real projection, shapes match, values are finite,
// nothing targeted is missing) and builds the weights in the base's dtype and
// device. The summary's type is "lora" or "dora", with the distinct ranks and
// target projections. Errors name the file and tensor: INVALID_ARGUMENT for
// malformed input, FAILED_PRECONDITION for an adapter that does not fit this
// base model. Thread-safe (reads the base only).
absl::StatusOr<LoadedAdapter> LoadLora(const AdapterFiles& files, const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_LORA_LOADER_H_
