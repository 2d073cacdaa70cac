#include "adapters/adapter_loader.h"

#include "absl/strings/str_cat.h"
#include "adapters/bottleneck_loader.h"
#include "adapters/ia3_loader.h"
#include "adapters/lora_loader.h"
#include "adapters/peft_fields.h"
#include "adapters/prompt_tuning_loader.h"

namespace adapterd::adapters {

absl::StatusOr<LoadedAdapter> LoadAdapter(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string label = files.label + "/" + kConfigFile;
  OrderedJson j = OrderedJson::parse(files.config_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return ConfigError(label, "not a valid JSON object");
  LoadedAdapter out;
  if (files.weights_file == kAdapterHubWeightsFile) {
    if (!j.contains("config")) {
      return ConfigError(label, absl::StrCat("not an AdapterHub config (no 'config' object) next to ",
                                             kAdapterHubWeightsFile));
    }
    absl::StatusOr<LoadedBottleneck> bn = LoadBottleneck(files, base);
    if (!bn.ok()) return bn.status();
    out.weights = std::move(bn->weights);
    out.summary.type = "bottleneck";
    out.summary.bottleneck_widths = std::move(bn->widths);
    out.summary.locations = std::move(bn->locations);
    out.summary.non_linearity = bn->config.non_linearity;
    out.summary.parallel = bn->config.is_parallel;
    return out;
  }
  if (j.contains("config") && !j.contains("peft_type")) {
    return ConfigError(label, absl::StrCat("an AdapterHub config needs its weights in ", kAdapterHubWeightsFile));
  }
  std::string type = "LORA";  // PEFT configs without peft_type are LoRA
  if (auto t = j.find("peft_type"); t != j.end() && !t->is_null()) {
    if (!t->is_string()) return ConfigError(label, "'peft_type' must be a string");
    type = t->get<std::string>();
  }
  if (type == "LORA") {
    absl::StatusOr<LoadedLora> lora = LoadLora(files, base);
    if (!lora.ok()) return lora.status();
    out.weights = std::move(lora->weights);
    out.summary.type = lora->summary.dora ? "dora" : "lora";
    out.summary.ranks = std::move(lora->summary.ranks);
    out.summary.target_modules = std::move(lora->summary.target_modules);
    return out;
  }
  if (type == "IA3") {
    absl::StatusOr<LoadedIa3> ia3 = LoadIa3(files, base);
    if (!ia3.ok()) return ia3.status();
    out.weights = std::move(ia3->weights);
    out.summary.type = "ia3";
    out.summary.target_modules = std::move(ia3->target_modules);
    out.summary.feedforward_modules = std::move(ia3->feedforward_modules);
    return out;
  }
  if (type == "PROMPT_TUNING") {
    absl::StatusOr<std::shared_ptr<model::AdapterWeights>> pt = LoadPromptTuning(files, base);
    if (!pt.ok()) return pt.status();
    out.weights = *std::move(pt);
    out.summary.type = "prompt_tuning";
    out.summary.num_virtual_tokens = out.weights->num_virtual_tokens();
    return out;
  }
  if (type == "PREFIX_TUNING") {
    return ConfigError(label, "'peft_type' PREFIX_TUNING is not supported: its per-layer key/value prefixes "
                              "would have to be copied into every sequence's KV cache blocks; use "
                              "PROMPT_TUNING, LORA, IA3 or a bottleneck adapter");
  }
  return ConfigError(label, absl::StrCat("'peft_type' ", j["peft_type"].dump(),
                                         " is not supported (LORA, IA3, PROMPT_TUNING)"));
}

}  // namespace adapterd::adapters
