#include "adapters/kind_loaders.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_tensors.h"
#include "adapters/peft_fields.h"
#include "adapters/peft_modules.h"
#include "server/common/torch_call.h"

namespace adapterd::adapters {
namespace {

struct Ia3Config {
  ModuleSelector targets{{"k_proj", "v_proj", "down_proj"}, std::nullopt};  // PEFT's Llama default
  ModuleSelector feedforward{{"down_proj"}, std::nullopt};
  ModuleSelector exclude;
};

absl::StatusOr<Ia3Config> ParseConfig(const std::string& text, const std::string& label) {
  OrderedJson j = OrderedJson::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return ConfigError(label, "not a valid JSON object");
  for (const char* key : {"modules_to_save", "target_parameters"}) {
    if (IsSet(j, key)) return ConfigError(label, absl::StrCat("'", key, "' is not supported (", j[key].dump(), ")"));
  }
  Ia3Config c;
  for (auto [key, sel] : {std::pair{"target_modules", &c.targets}, std::pair{"feedforward_modules", &c.feedforward},
                          std::pair{"exclude_modules", &c.exclude}}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    *sel = ModuleSelector{};
    if (absl::Status s = ParseSelector(*it, label, key, sel); !s.ok()) return s;
  }
  return c;
}

}  // namespace

absl::StatusOr<LoadedAdapter> LoadIa3(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string cfg_label = files.label + "/" + kConfigFile;
  absl::StatusOr<Ia3Config> config = ParseConfig(files.config_json, cfg_label);
  if (!config.ok()) return config.status();
  const model::SafetensorsFile& f = *files.weights;
  const int64_t num_layers = base.config().num_layers;
  const PeftScanRules rules{
      {{"ia3_l", 0}}, 1, "not an IA3 vector of a linear projection of the base model", nullptr, nullptr};
  absl::StatusOr<PeftModules> found = ScanPeftModules(f, num_layers, rules);
  if (!found.ok()) return found.status();

  LoadedAdapter out;
  out.weights = std::make_shared<model::AdapterWeights>(num_layers, model::AdapterKind::kIa3);
  std::set<std::string> targets, feedforward;
  absl::Status st = ReconcilePeftModules(
      f, cfg_label, num_layers, *found,
      [&](const std::string& name, int64_t) {
        return config->targets.Matches(name) && !config->exclude.Matches(name);
      },
      "ia3_l",
      [&](int64_t layer, model::Proj p, const std::string& name, const PeftModule& m) -> absl::Status {
        const model::StTensorInfo& t = *m.tensors[0];
        const bool ff = config->feedforward.Matches(name);
        const at::Tensor& w = base.ProjWeight(layer, p);
        const std::vector<int64_t> want = ff ? std::vector<int64_t>{1, w.size(1)} : std::vector<int64_t>{w.size(0), 1};
        if (absl::Status s = CheckShape(f, t, want); !s.ok()) return s;
        model::Ia3Module module;
        module.scales_input = ff;
        absl::Status built = TorchCall(absl::StrCat(f.label(), ": ", name), [&] {
          c10::InferenceMode guard;
          module.scale = ToTensor(f, t, base.options()).flatten().contiguous();
        });
        if (!built.ok()) return built;
        out.weights->SetIa3(layer, p, std::move(module));
        targets.insert(std::string(model::ProjName(p)));
        if (ff) feedforward.insert(std::string(model::ProjName(p)));
        return absl::OkStatus();
      });
  if (!st.ok()) return st;
  if (targets.empty()) return absl::InvalidArgumentError(absl::StrCat(f.label(), ": holds no IA3 vectors"));
  out.summary.type = "ia3";
  out.summary.target_modules.assign(targets.begin(), targets.end());
  out.summary.feedforward_modules.assign(feedforward.begin(), feedforward.end());
  return out;
}

}  // namespace adapterd::adapters
