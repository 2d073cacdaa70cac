// The embedded default model: a small Llama checkpoint generated on demand.
#ifndef ADAPTERD_SERVER_MODEL_DEMO_CHECKPOINT_H_
#define ADAPTERD_SERVER_MODEL_DEMO_CHECKPOINT_H_

#include <string>

#include "absl/status/statusor.h"

namespace adapterd::model {

// Writes (once) a deterministic random LlamaForCausalLM checkpoint in
// Hugging Face layout (config.json, generation_config.json,
// model.safetensors) under `cache_dir`, and returns its directory. The same
// version always has the same bytes; an existing complete copy is reused.
// The directory appears atomically, so concurrent callers are safe.
absl::StatusOr<std::string> EnsureDemoCheckpoint(const std::string& cache_dir);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_DEMO_CHECKPOINT_H_
