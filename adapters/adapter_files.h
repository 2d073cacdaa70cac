// The files of one adapter, read from a directory or an upload.
#ifndef ADAPTERD_ADAPTERS_ADAPTER_FILES_H_
#define ADAPTERD_ADAPTERS_ADAPTER_FILES_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "adapters/adapter_source.h"
#include "server/model/safetensors.h"

namespace adapterd::adapters {

inline constexpr char kConfigFile[] = "adapter_config.json";
// PEFT's weights (LoRA, IA3, prompt tuning).
inline constexpr char kWeightsFile[] = "adapter_model.safetensors";
// AdapterHub `adapters` weights (bottleneck adapters).
inline constexpr char kAdapterHubWeightsFile[] = "adapter.safetensors";
// Optional: the fine-tuned model's config.json saved beside a PEFT adapter
// (transformers' PretrainedConfig.save_pretrained). A classification
// adapter's label names (id2label) and pad_token_id come from it.
inline constexpr char kModelConfigFile[] = "config.json";
// Every file an adapter directory or upload may hold.
inline constexpr const char* kAdapterFileNames[] = {kConfigFile, kWeightsFile, kAdapterHubWeightsFile,
                                                   kModelConfigFile};

// adapter_config.json and one safetensors weights file. Which weights file
// it was tells PEFT and AdapterHub saves apart. A plain value.
struct AdapterFiles {
  std::string label;  // the directory, or "upload" for uploaded files (used in messages)
  std::string config_json;
  std::string model_config_json;  // config.json; empty when absent
  std::string weights_file;  // kWeightsFile or kAdapterHubWeightsFile
  std::unique_ptr<model::SafetensorsFile> weights;
};

// Whether `name` is a file an upload may carry.
bool IsAdapterFileName(const std::string& name);

// Reads <dir>/adapter_config.json and <dir>/adapter_model.safetensors or
// <dir>/adapter.safetensors, and <dir>/config.json when present. A directory with only pickled weights
// (adapter_model.bin, pytorch_adapter.bin) is rejected: pickles can run code.
absl::StatusOr<AdapterFiles> ReadAdapterDirectory(const std::string& dir);
// Builds AdapterFiles from uploaded file contents keyed by file name;
// messages name `label`.
absl::StatusOr<AdapterFiles> AdapterFilesFromUpload(std::map<std::string, std::string> files,
                                                    const std::string& label = "upload");
// The same, over files that stay shared with their other owners (the adapter
// cache's host copy): the weights file is parsed in place, not copied, and
// the result keeps `files` alive while it lives.
absl::StatusOr<AdapterFiles> AdapterFilesFromShared(std::shared_ptr<const UploadSource> files,
                                                    const std::string& label = "upload");
// The adapter files of `dir` (the config and the weights file that exist),
// read into memory for AdapterFilesFromUpload. NOT_FOUND for a missing
// directory, DATA_LOSS for a file that cannot be read.
absl::StatusOr<std::map<std::string, std::string>> ReadAdapterFilesIntoMemory(const std::string& dir);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_ADAPTER_FILES_H_
