// Reads any supported adapter and checks it against the base model.
#ifndef ADAPTERD_ADAPTERS_ADAPTER_LOADER_H_
#define ADAPTERD_ADAPTERS_ADAPTER_LOADER_H_

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "adapters/loaded_adapter.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

// Tells the format apart (PEFT: adapter_model.safetensors and a peft_type;
// AdapterHub: adapter.safetensors and a "config" object) and dispatches to
// the kind's loader (see AdapterKindLoader). PEFT types adapterd does not
// serve are rejected by name. Errors: INVALID_ARGUMENT for malformed input,
// FAILED_PRECONDITION for an adapter that does not fit this base model; each
// names the file, key or tensor. Thread-safe (reads the base only).
absl::StatusOr<LoadedAdapter> LoadAdapter(const AdapterFiles& files, const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_ADAPTER_LOADER_H_
