// The embedded default model: a small Llama checkpoint generated on demand.
#ifndef ADAPTERD_SERVER_MODEL_DEMO_CHECKPOINT_H_
#define ADAPTERD_SERVER_MODEL_DEMO_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/trainable_llama.h"

namespace adapterd::model {

// The demo model's config.json: LlamaForCausalLM, vocabulary 2048, hidden
// size 256, 4 layers, 8 heads, 4 key/value heads, intermediate size 688.
std::string_view DemoConfigJson();

// The demo model's random weights (seeded; the same on every call), in
// LlamaTensorNames order.
NamedTensors RandomDemoWeights();

// Writes config.json (DemoConfigJson), generation_config.json (BOS 1 and
// `eos_token_ids`) and model.safetensors of `weights` (contiguous float32)
// into the existing directory `dir`.
absl::Status WriteDemoCheckpoint(const std::string& dir, const NamedTensors& weights,
                                 const std::vector<int64_t>& eos_token_ids);

// Writes (once) the random demo checkpoint (RandomDemoWeights, EOS 2) in
// Hugging Face layout (config.json, generation_config.json,
// model.safetensors) under `cache_dir`, and returns its directory. It has no
// tokenizer. The same version always has the same bytes; an existing
// complete copy is reused. The directory appears atomically, so concurrent
// callers are safe. This is the fast demo that tests use; the server
// serves the trained one (server/core/trained_demo.h) unless told not to.
absl::StatusOr<std::string> EnsureDemoCheckpoint(const std::string& cache_dir);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_DEMO_CHECKPOINT_H_
