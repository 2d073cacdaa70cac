// Reads PEFT LoRA/DoRA adapters and checks them against the base model.
#ifndef ADAPTERD_ADAPTERS_LORA_LOADER_H_
#define ADAPTERD_ADAPTERS_LORA_LOADER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "adapters/lora_config.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"

namespace adapterd::adapters {

// What a loaded LoRA adapter looks like, for listings.
struct LoraSummary {
  std::vector<int64_t> ranks;                // distinct ranks, ascending
  std::vector<std::string> target_modules;   // distinct projection names
  bool dora = false;
};

struct LoadedLora {
  std::shared_ptr<model::AdapterWeights> weights;
  LoraSummary summary;
};

// Validates every tensor against the base (each maps to a real projection,
// shapes match, nothing targeted is missing) and builds the weights in the
// base's dtype and device. Errors name the file and tensor: INVALID_ARGUMENT
// for malformed input, FAILED_PRECONDITION for an adapter that does not fit
// this base model. Thread-safe (reads the base only).
absl::StatusOr<LoadedLora> LoadLora(const AdapterFiles& files, const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_LORA_LOADER_H_
