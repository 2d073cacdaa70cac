// Reads AdapterHub `adapters` bottleneck adapters (Houlsby, Pfeiffer,
// parallel) and checks them against the base model.
#ifndef ADAPTERD_ADAPTERS_BOTTLENECK_LOADER_H_
#define ADAPTERD_ADAPTERS_BOTTLENECK_LOADER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "adapters/bottleneck_config.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

struct LoadedBottleneck {
  std::shared_ptr<model::AdapterWeights> weights;
  BottleneckConfig config;
  std::vector<int64_t> widths;          // distinct bottleneck widths, ascending
  std::vector<std::string> locations;   // "mh_adapter", "output_adapter"
};

// Requires the config's hidden size to be the base's, and exactly the tensors
// the config implies for every placed module (down/up projections, the
// optional LayerNorms and scaling), with the library's key names and shapes.
// Errors name the file, key or tensor. Thread-safe.
absl::StatusOr<LoadedBottleneck> LoadBottleneck(const AdapterFiles& files, const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_BOTTLENECK_LOADER_H_
