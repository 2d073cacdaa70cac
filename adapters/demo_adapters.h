// LoRA adapters for the embedded demo model.
#ifndef ADAPTERD_ADAPTERS_DEMO_ADAPTERS_H_
#define ADAPTERD_ADAPTERS_DEMO_ADAPTERS_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/adapter_weights.h"
#include "server/model/model_config.h"
#include "server/model/trainable_llama.h"

namespace adapterd::adapters {

// Writes a PEFT LoRA adapter into the existing directory `dir`:
// adapter_config.json (rank `r`, `alpha`, `targets`, no bias, dropout or
// DoRA) and adapter_model.safetensors holding `tensors` (contiguous float32,
// named as PEFT names them).
absl::Status WritePeftLora(const std::string& dir, int64_t r, double alpha, const std::vector<model::Proj>& targets,
                           const model::NamedTensors& tensors);

// Writes (once) a few deterministic random PEFT LoRA adapters for `base`
// under `cache_dir`, in the PEFT layout, and returns {id, directory} pairs:
// "demo-qv-r4" (q/v_proj, rank 4) and "demo-all-r8" (all seven projections,
// rank 8). Each directory appears atomically.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> EnsureDemoAdapters(
    const std::string& cache_dir, const model::ModelConfig& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_DEMO_ADAPTERS_H_
