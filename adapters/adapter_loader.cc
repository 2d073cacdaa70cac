#include "adapters/adapter_loader.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/kind_loaders.h"
#include "adapters/peft_fields.h"
#include "server/model/device_upload.h"

namespace adapterd::adapters {
namespace {

// The loader of each kind, by the weights file that tells the format apart
// and, for PEFT saves, the config's peft_type.
struct KindEntry {
  const char* weights_file;
  const char* peft_type;  // null for AdapterHub saves
  AdapterKindLoader load;
};

constexpr KindEntry kKinds[] = {
    {kAdapterHubWeightsFile, nullptr, LoadBottleneck},
    {kWeightsFile, "LORA", LoadLora},
    {kWeightsFile, "ADALORA", LoadLora},  // served as LoRA: E folded into A at load
    {kWeightsFile, "IA3", LoadIa3},
    {kWeightsFile, "PROMPT_TUNING", LoadPromptTuning},
    {kWeightsFile, "PREFIX_TUNING", LoadPrefixTuning},
    {kWeightsFile, "ADAPTION_PROMPT", LoadAdaptionPrompt},
};

// "LORA, ADALORA, IA3, PROMPT_TUNING, PREFIX_TUNING, ADAPTION_PROMPT".
std::string PeftTypes() {
  std::vector<std::string> types;
  for (const KindEntry& k : kKinds) {
    if (k.peft_type != nullptr) types.emplace_back(k.peft_type);
  }
  return absl::StrJoin(types, ", ");
}

// The table's key for `files`: the peft_type, or "" for an AdapterHub save.
absl::StatusOr<std::string> KindOf(const AdapterFiles& files, const OrderedJson& j, const std::string& label) {
  if (files.weights_file == kAdapterHubWeightsFile) {
    if (!j.contains("config")) {
      return ConfigError(label, absl::StrCat("not an AdapterHub config (no 'config' object) next to ",
                                             kAdapterHubWeightsFile));
    }
    return "";
  }
  if (j.contains("config") && !j.contains("peft_type")) {
    return ConfigError(label, absl::StrCat("an AdapterHub config needs its weights in ", kAdapterHubWeightsFile));
  }
  auto t = j.find("peft_type");
  if (t == j.end() || t->is_null()) return "LORA";  // PEFT configs without peft_type are LoRA
  if (!t->is_string()) return ConfigError(label, "'peft_type' must be a string");
  return t->get<std::string>();
}

}  // namespace

namespace {

// LoadAdapter() on the calling thread's current stream.
absl::StatusOr<LoadedAdapter> LoadOnThisStream(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string label = files.label + "/" + kConfigFile;
  OrderedJson j = OrderedJson::parse(files.config_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return ConfigError(label, "not a valid JSON object");
  absl::StatusOr<std::string> kind = KindOf(files, j, label);
  if (!kind.ok()) return kind.status();
  for (const KindEntry& k : kKinds) {
    if (files.weights_file == k.weights_file && *kind == (k.peft_type == nullptr ? "" : k.peft_type)) {
      return k.load(files, base);
    }
  }
  return ConfigError(label, absl::StrCat("'peft_type' ", j["peft_type"].dump(), " is not supported (", PeftTypes(),
                                         ")"));
}

}  // namespace

absl::StatusOr<LoadedAdapter> LoadAdapter(const AdapterFiles& files, const model::LlamaModel& base) {
  // On a GPU, the weights are copied on a stream of their own: a load never
  // stalls the step that is running.
  model::DeviceUploadScope upload(base.options().device);
  absl::StatusOr<LoadedAdapter> loaded = LoadOnThisStream(files, base);
  if (!loaded.ok()) return loaded;
  // With a slot pool, the LoRA weights move into a slot (copied on the same
  // stream, so Finish() waits for that too).
  if (model::LoraSlotPool* pool = base.lora_slot_pool(); pool != nullptr && loaded->weights != nullptr) {
    if (absl::StatusOr<model::LoraSlotPool::Placement> placed = pool->Place(*loaded->weights); !placed.ok()) {
      return placed.status();
    }
  }
  if (absl::Status done = upload.Finish(); !done.ok()) return done;
  return loaded;
}

}  // namespace adapterd::adapters
