// Reads PEFT IA3 adapters and checks them against the base model.
#ifndef ADAPTERD_ADAPTERS_IA3_LOADER_H_
#define ADAPTERD_ADAPTERS_IA3_LOADER_H_

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "adapters/loaded_adapter.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

// An AdapterKindLoader for PEFT "IA3". Parses the config (target_modules and
// feedforward_modules as PEFT matches them; unsupported keys rejected by
// name), then requires exactly one finite `ia3_l` per targeted module, shaped
// [1, in] for feed-forward modules and [out, 1] otherwise. The summary lists
// the target projections and the feed-forward ones (whose input is scaled).
// Errors name the file and tensor. Thread-safe.
absl::StatusOr<LoadedAdapter> LoadIa3(const AdapterFiles& files, const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_IA3_LOADER_H_
