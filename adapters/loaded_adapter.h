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
  std::string type;                          // "lora", "dora", "ia3", "bottleneck", "prompt_tuning"
  std::vector<int64_t> ranks;                // LoRA: distinct ranks
  std::vector<std::string> target_modules;   // LoRA, IA3: projection names
  std::vector<std::string> feedforward_modules;  // IA3: input-scaled projections
  std::vector<int64_t> bottleneck_widths;    // bottleneck: distinct widths
  std::vector<std::string> locations;        // bottleneck: "mh_adapter", "output_adapter"
  std::string non_linearity;                 // bottleneck
  bool parallel = false;                     // bottleneck
  int64_t num_virtual_tokens = 0;            // prompt tuning
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
