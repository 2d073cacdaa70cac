// Reads AdapterHub `adapters` bottleneck adapters (Houlsby, Pfeiffer,
// parallel) and checks them against the base model.
#ifndef ADAPTERD_ADAPTERS_BOTTLENECK_LOADER_H_
#define ADAPTERD_ADAPTERS_BOTTLENECK_LOADER_H_

#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "adapters/loaded_adapter.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

// An AdapterKindLoader for AdapterHub saves. Requires the config's hidden
// size to be the base's, and exactly the tensors the config implies for every
// placed module (down/up projections, the optional LayerNorms and scaling),
// with the library's key names and shapes and finite values. The summary's
// type is "bottleneck", with the distinct widths, the locations, the
// non-linearity and whether the modules are parallel. Errors name the file,
// key or tensor. Thread-safe.
absl::StatusOr<LoadedAdapter> LoadBottleneck(const AdapterFiles& files, const model::LlamaModel& base);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_BOTTLENECK_LOADER_H_
