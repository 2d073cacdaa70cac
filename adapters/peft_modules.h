// The per-module tensors of PEFT adapters that act on the base's linear
// projections (LoRA, DoRA, IA3): finding them in the weights file and
// checking them against the modules the config targets.
#ifndef ADAPTERD_ADAPTERS_PEFT_MODULES_H_
#define ADAPTERD_ADAPTERS_PEFT_MODULES_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/adapter_weights.h"
#include "server/model/safetensors.h"

namespace adapterd::adapters {

// What every PEFT key starts with.
inline constexpr char kPeftPrefix[] = "base_model.model.";

// One accepted last part of a module tensor's name and the slot of
// PeftModule::tensors it fills ("lora_magnitude_vector" and
// "lora_magnitude_vector.weight" fill the same slot).
struct PeftKind {
  std::string_view suffix;
  int slot = 0;
};

// How ScanPeftModules reads a weights file.
struct PeftScanRules {
  std::vector<PeftKind> kinds;
  int num_slots = 1;
  // The reason (FAILED_PRECONDITION "<file>: tensor '<name>': <reason>")
  // given for a tensor that is not <prefix>model.layers.<L>.<path>.<kind>
  // with <path> a projection of the base ("self_attn.q_proj", ...).
  std::string not_a_module;
  // When set, runs first on every tensor; an error is returned as is (LoRA
  // names its unsupported tensors, and a missing prefix, this way).
  std::function<absl::Status(const model::StTensorInfo&)> precheck;
  // When set, tensors it accepts are left out of the scan (after the
  // precheck): LoRA reads the tensors outside the decoder layers itself.
  std::function<bool(const model::StTensorInfo&)> skip;
};

// The tensors of one (layer, projection), by slot; null where absent.
struct PeftModule {
  std::vector<const model::StTensorInfo*> tensors;
};
using PeftModules = std::map<std::pair<int64_t, model::Proj>, PeftModule>;

// Maps every tensor of `f` to its (layer, projection) and slot. Errors, in
// this order per tensor: the precheck's; `rules.not_a_module`; a layer the
// base does not have (ParseLayerIndex); a dtype other than F32, F16 or BF16,
// or a NaN or infinite value (CheckFloatTensor).
absl::StatusOr<PeftModules> ScanPeftModules(const model::SafetensorsFile& f, int64_t num_layers,
                                            const PeftScanRules& rules);

// Builds the module of (layer, p), named `name` ("model.layers.1.mlp.up_proj"),
// from its tensors.
using PeftModuleBuilder =
    std::function<absl::Status(int64_t layer, model::Proj p, const std::string& name, const PeftModule& found)>;

// Visits every (layer, projection) of a base of `num_layers` layers in order
// and compares `found` with what the config (named `config_label`) targets:
// INVALID_ARGUMENT "<file>: missing tensor '<key>' (<config> targets <name>)"
// for a targeted module without tensors, FAILED_PRECONDITION "<file>: tensor
// '<key>': module <name> is not targeted by <config>" for tensors of a module
// it does not target, where <key> is the module's key ending in
// `first_kind`. Calls `build` for every targeted module that has tensors and
// returns its first error.
absl::Status ReconcilePeftModules(const model::SafetensorsFile& f, const std::string& config_label,
                                  int64_t num_layers, const PeftModules& found,
                                  const std::function<bool(const std::string& name, int64_t layer)>& targets,
                                  std::string_view first_kind, const PeftModuleBuilder& build);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_PEFT_MODULES_H_
