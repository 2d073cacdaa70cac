#include "adapters/peft_modules.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_tensors.h"

namespace adapterd::adapters {
namespace {

constexpr std::string_view kLayers = "model.layers.";

struct ModuleKey {
  std::string_view digits;  // the layer, as written
  model::Proj proj;
  int slot;
};

// Splits "<prefix>model.layers.<digits>.<path>.<kind>", or nullopt unless
// the name has that form with a projection's path and an accepted kind.
std::optional<ModuleKey> SplitKey(std::string_view name, const std::vector<PeftKind>& kinds) {
  const std::string_view prefix = kPeftPrefix;
  if (!name.starts_with(prefix) || !name.substr(prefix.size()).starts_with(kLayers)) return std::nullopt;
  name.remove_prefix(prefix.size() + kLayers.size());
  const size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
  const std::string_view digits = name.substr(0, dot);
  if (digits.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  name.remove_prefix(dot + 1);
  for (int p = 0; p < model::kNumProj; ++p) {
    const std::string_view path = model::ProjPath(static_cast<model::Proj>(p));
    if (!name.starts_with(path) || name.size() <= path.size() || name[path.size()] != '.') continue;
    const std::string_view kind = name.substr(path.size() + 1);
    for (const PeftKind& k : kinds) {
      if (k.suffix == kind) return ModuleKey{digits, static_cast<model::Proj>(p), k.slot};
    }
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<PeftModules> ScanPeftModules(const model::SafetensorsFile& f, int64_t num_layers,
                                            const PeftScanRules& rules) {
  PeftModules modules;
  for (const model::StTensorInfo& t : f.tensors()) {
    if (rules.precheck) {
      if (absl::Status s = rules.precheck(t); !s.ok()) return s;
    }
    if (rules.skip && rules.skip(t)) continue;
    const std::optional<ModuleKey> key = SplitKey(t.name, rules.kinds);
    if (!key) {
      return absl::FailedPreconditionError(absl::StrCat(f.label(), ": tensor '", t.name, "': ", rules.not_a_module));
    }
    absl::StatusOr<int64_t> layer = ParseLayerIndex(f, t, key->digits, num_layers);
    if (!layer.ok()) return layer.status();
    if (absl::Status s = CheckFloatTensor(f, t); !s.ok()) return s;
    PeftModule& m = modules[{*layer, key->proj}];
    m.tensors.resize(rules.num_slots);
    m.tensors[key->slot] = &t;
  }
  return modules;
}

absl::Status ReconcilePeftModules(const model::SafetensorsFile& f, const std::string& config_label,
                                  int64_t num_layers, const PeftModules& found,
                                  const std::function<bool(const std::string& name, int64_t layer)>& targets,
                                  std::string_view first_kind, const PeftModuleBuilder& build) {
  const absl::string_view kind(first_kind.data(), first_kind.size());
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    for (int pi = 0; pi < model::kNumProj; ++pi) {
      const auto p = static_cast<model::Proj>(pi);
      const std::string name = ModuleName(layer, p);
      const std::string key = absl::StrCat(kPeftPrefix, name, ".", kind);
      const bool targeted = targets(name, layer);
      auto it = found.find({layer, p});
      if (it == found.end()) {
        if (targeted) {
          return absl::InvalidArgumentError(
              absl::StrCat(f.label(), ": missing tensor '", key, "' (", config_label, " targets ", name, ")"));
        }
        continue;
      }
      if (!targeted) {
        return absl::FailedPreconditionError(
            absl::StrCat(f.label(), ": tensor '", key, "': module ", name, " is not targeted by ", config_label));
      }
      if (absl::Status s = build(layer, p, name, it->second); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace adapterd::adapters
