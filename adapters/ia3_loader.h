// Reads PEFT IA3 adapters and checks them against the base model.
#ifndef ADAPTERD_ADAPTERS_IA3_LOADER_H_
#define ADAPTERD_ADAPTERS_IA3_LOADER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

struct LoadedIa3 {
  std::shared_ptr<model::AdapterWeights> weights;
  std::vector<std::string> target_modules;       // distinct projection names
  std::vector<std::string> feedforward_modules;  // those whose input is scaled
};

// Parses the IA3 config (target_modules and feedforward_modules as PEFT
// matches them; unsupported keys rejected by name), then requires exactly one
// `ia3_l` per targeted module, shaped [1, in] for feed-forward modules and
// [out, 1] otherwise. Errors name the file and tensor. Thread-safe.
absl::StatusOr<LoadedIa3> LoadIa3(const AdapterFiles& files, const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_IA3_LOADER_H_
