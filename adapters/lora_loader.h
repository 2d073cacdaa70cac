// Reads PEFT LoRA/DoRA adapters and checks them against the base model.
#ifndef ADAPTERD_ADAPTERS_LORA_LOADER_H_
#define ADAPTERD_ADAPTERS_LORA_LOADER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "adapters/lora_config.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"

namespace adapterd::adapters {

// The two files of a PEFT adapter, read from a directory or an upload.
struct AdapterFiles {
  std::string label;  // the directory, or "upload" for uploaded files (used in messages)
  std::string config_json;
  std::unique_ptr<model::SafetensorsFile> weights;
};

inline constexpr char kConfigFile[] = "adapter_config.json";
inline constexpr char kWeightsFile[] = "adapter_model.safetensors";

// Reads <dir>/adapter_config.json and <dir>/adapter_model.safetensors.
// A directory with only adapter_model.bin is rejected: pickles are not loaded.
absl::StatusOr<AdapterFiles> ReadAdapterDirectory(const std::string& dir);
// Builds AdapterFiles from uploaded file contents keyed by file name.
absl::StatusOr<AdapterFiles> AdapterFilesFromUpload(std::map<std::string, std::string> files);

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
