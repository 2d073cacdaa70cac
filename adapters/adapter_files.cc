#include "adapters/adapter_files.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "server/common/file_util.h"

namespace adapterd::adapters {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPickles[] = {"adapter_model.bin", "pytorch_adapter.bin"};

absl::Status PickleError(const std::string& where) {
  return absl::InvalidArgumentError(absl::StrCat(
      where, ": pickled weights are not loaded (they can run code); save the adapter as safetensors (",
      kWeightsFile, " with PEFT's safe_serialization=True, or ", kAdapterHubWeightsFile,
      " with save_adapter(..., use_safetensors=True))"));
}

}  // namespace

bool IsAdapterFileName(const std::string& name) {
  for (const char* known : kAdapterFileNames) {
    if (name == known) return true;
  }
  return false;
}

absl::StatusOr<AdapterFiles> ReadAdapterDirectory(const std::string& dir) {
  AdapterFiles files;
  files.label = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  }
  for (const char* name : {kWeightsFile, kAdapterHubWeightsFile}) {
    if (fs::exists(fs::path(dir) / name, ec)) {
      files.weights_file = name;
      break;
    }
  }
  if (files.weights_file.empty()) {
    for (const char* pickle : kPickles) {
      if (fs::exists(fs::path(dir) / pickle, ec)) return PickleError(absl::StrCat(dir, "/", pickle));
    }
    return absl::InvalidArgumentError(absl::StrCat(dir, ": missing ", kWeightsFile, " (PEFT) or ",
                                                   kAdapterHubWeightsFile, " (AdapterHub)"));
  }
  const fs::path cfg = fs::path(dir) / kConfigFile;
  absl::StatusOr<std::string> config = ReadFileToString(cfg.string());
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat(cfg.string(), ": missing or unreadable"));
  files.config_json = *std::move(config);
  if (const fs::path model_cfg = fs::path(dir) / kModelConfigFile; fs::exists(model_cfg, ec)) {
    absl::StatusOr<std::string> text = ReadFileToString(model_cfg.string());
    if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat(model_cfg.string(), ": unreadable"));
    files.model_config_json = *std::move(text);
  }
  absl::StatusOr<std::unique_ptr<model::SafetensorsFile>> w =
      model::SafetensorsFile::Open((fs::path(dir) / files.weights_file).string());
  if (!w.ok()) return w.status();
  files.weights = *std::move(w);
  return files;
}

absl::StatusOr<std::map<std::string, std::string>> ReadAdapterFilesIntoMemory(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  std::map<std::string, std::string> out;
  for (const char* name : kAdapterFileNames) {
    const fs::path p = fs::path(dir) / name;
    if (!fs::exists(p, ec)) continue;
    absl::StatusOr<std::string> data = ReadFileToString(p.string());
    if (!data.ok()) return absl::DataLossError(data.status().message());
    out[name] = *std::move(data);
  }
  return out;
}

absl::StatusOr<AdapterFiles> AdapterFilesFromUpload(std::map<std::string, std::string> uploaded,
                                                    const std::string& label) {
  auto shared = std::make_shared<UploadSource>();
  shared->files = std::move(uploaded);
  return AdapterFilesFromShared(std::move(shared), label);
}

absl::StatusOr<AdapterFiles> AdapterFilesFromShared(std::shared_ptr<const UploadSource> source,
                                                    const std::string& label) {
  const std::map<std::string, std::string>& uploaded = source->files;
  AdapterFiles files;
  files.label = label;
  for (const auto& [name, bytes] : uploaded) {
    if (IsAdapterFileName(name)) continue;
    for (const char* pickle : kPickles) {
      if (name == pickle) return PickleError(absl::StrCat(label, ": ", name));
    }
    return absl::InvalidArgumentError(absl::StrCat(label, ": unexpected file '", name, "' (expected ",
                                                   kConfigFile, " and ", kWeightsFile, " or ",
                                                   kAdapterHubWeightsFile, ", and optionally ", kModelConfigFile,
                                                   ")"));
  }
  auto cfg = uploaded.find(kConfigFile);
  if (cfg == uploaded.end()) return absl::InvalidArgumentError(absl::StrCat(label, ": missing ", kConfigFile));
  auto peft = uploaded.find(kWeightsFile);
  auto hub = uploaded.find(kAdapterHubWeightsFile);
  if (peft != uploaded.end() && hub != uploaded.end()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": both ", kWeightsFile, " and ",
                                                   kAdapterHubWeightsFile, "; send one weights file"));
  }
  auto weights = peft != uploaded.end() ? peft : hub;
  if (weights == uploaded.end()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": missing ", kWeightsFile, " (PEFT) or ",
                                                   kAdapterHubWeightsFile, " (AdapterHub)"));
  }
  files.config_json = cfg->second;  // small; the weights are shared, not copied
  if (auto model_cfg = uploaded.find(kModelConfigFile); model_cfg != uploaded.end()) {
    files.model_config_json = model_cfg->second;
  }
  files.weights_file = weights->first;
  absl::StatusOr<std::unique_ptr<model::SafetensorsFile>> w = model::SafetensorsFile::FromSharedBytes(
      std::shared_ptr<const std::string>(source, &weights->second),
      absl::StrCat(label, label == "upload" ? ":" : "/", files.weights_file));
  if (!w.ok()) return w.status();
  files.weights = *std::move(w);
  return files;
}

}  // namespace adapterd::adapters
