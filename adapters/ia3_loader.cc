#include "adapters/ia3_loader.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <map>
#include <regex>
#include <set>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_tensors.h"
#include "adapters/peft_fields.h"
#include "server/common/torch_call.h"

namespace adapterd::adapters {
namespace {

constexpr char kPrefix[] = "base_model.model.";

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

absl::StatusOr<LoadedIa3> LoadIa3(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string cfg_label = files.label + "/" + kConfigFile;
  absl::StatusOr<Ia3Config> config = ParseConfig(files.config_json, cfg_label);
  if (!config.ok()) return config.status();
  const model::SafetensorsFile& f = *files.weights;
  const model::ModelConfig& mc = base.config();
  static const std::regex kKey(R"(model\.layers\.(\d+)\.((?:self_attn|mlp)\.[a-z_]+)\.ia3_l)");
  std::map<std::pair<int64_t, int>, const model::StTensorInfo*> found;
  for (const model::StTensorInfo& t : f.tensors()) {
    const bool prefixed = t.name.rfind(kPrefix, 0) == 0;
    const std::string key = prefixed ? t.name.substr(sizeof(kPrefix) - 1) : t.name;
    std::smatch m;
    model::Proj proj;
    if (!prefixed || !std::regex_match(key, m, kKey) || !ParseProj(m[2].str(), &proj)) {
      return absl::FailedPreconditionError(absl::StrCat(
          f.label(), ": tensor '", t.name, "': not an IA3 vector of a linear projection of the base model"));
    }
    const int64_t layer = std::stoll(m[1].str().substr(0, 9));
    if (layer >= mc.num_layers) {
      return absl::FailedPreconditionError(absl::StrCat(f.label(), ": tensor '", t.name, "': layer ", layer,
                                                        " does not exist (the base has ", mc.num_layers,
                                                        " layers)"));
    }
    if (absl::Status s = CheckFloatDtype(f, t); !s.ok()) return s;
    found[{layer, static_cast<int>(proj)}] = &t;
  }
  LoadedIa3 out;
  out.weights = std::make_shared<model::AdapterWeights>(mc.num_layers, model::AdapterKind::kIa3);
  std::set<std::string> targets, feedforward;
  for (int64_t layer = 0; layer < mc.num_layers; ++layer) {
    for (int pi = 0; pi < model::kNumProj; ++pi) {
      const model::Proj p = static_cast<model::Proj>(pi);
      const std::string name = ModuleName(layer, p);
      const bool targeted = config->targets.Matches(name) && !config->exclude.Matches(name);
      auto it = found.find({layer, pi});
      if (it == found.end()) {
        if (targeted) {
          return absl::InvalidArgumentError(absl::StrCat(f.label(), ": missing tensor '", kPrefix, name,
                                                         ".ia3_l' (", cfg_label, " targets ", name, ")"));
        }
        continue;
      }
      if (!targeted) {
        return absl::FailedPreconditionError(absl::StrCat(f.label(), ": tensor '", it->second->name,
                                                          "': module ", name, " is not targeted by ",
                                                          cfg_label));
      }
      const bool ff = config->feedforward.Matches(name);
      const at::Tensor& w = base.ProjWeight(layer, p);
      const std::vector<int64_t> want = ff ? std::vector<int64_t>{1, w.size(1)} : std::vector<int64_t>{w.size(0), 1};
      if (absl::Status s = CheckShape(f, *it->second, want); !s.ok()) return s;
      model::Ia3Module m;
      m.scales_input = ff;
      absl::Status st = TorchCall(absl::StrCat(f.label(), ": ", name), [&] {
        c10::InferenceMode guard;
        m.scale = ToTensor(f, *it->second, base.options()).flatten().contiguous();
      });
      if (!st.ok()) return st;
      out.weights->SetIa3(layer, p, std::move(m));
      targets.insert(std::string(model::ProjName(p)));
      if (ff) feedforward.insert(std::string(model::ProjName(p)));
    }
  }
  if (targets.empty()) return absl::InvalidArgumentError(absl::StrCat(f.label(), ": holds no IA3 vectors"));
  out.target_modules.assign(targets.begin(), targets.end());
  out.feedforward_modules.assign(feedforward.begin(), feedforward.end());
  return out;
}

}  // namespace adapterd::adapters
