#include "adapters/kind_loaders.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_tensors.h"
#include "adapters/bottleneck_config.h"
#include "server/common/torch_call.h"

namespace adapterd::adapters {
namespace {

constexpr const char* kLocationKeys[model::kNumBottleneckLocations] = {"attention_adapters", "output_adapters"};
constexpr const char* kLocationNames[model::kNumBottleneckLocations] = {"mh_adapter", "output_adapter"};

using ModuleKey = std::pair<int64_t, int>;  // layer, location
using ModuleTensors = std::map<std::string, const model::StTensorInfo*>;  // by key suffix

// Every tensor of `f` by (layer, location) and the rest of its key, after
// checking its name, layer, dtype and values.
absl::StatusOr<std::map<ModuleKey, ModuleTensors>> ScanModules(const model::SafetensorsFile& f,
                                                               const BottleneckConfig& config, int64_t num_layers) {
  static const std::regex kKey(R"(model\.layers\.(\d{1,9})\.(attention_adapters|output_adapters)\.adapters\.([^.]+)\.(.+))");
  std::map<ModuleKey, ModuleTensors> modules;
  for (const model::StTensorInfo& t : f.tensors()) {
    std::smatch m;
    if (!std::regex_match(t.name, m, kKey)) {
      return absl::FailedPreconditionError(absl::StrCat(
          f.label(), ": tensor '", t.name, "': not a bottleneck adapter tensor of a Llama-family layer"));
    }
    if (m[3].str() != config.name) {
      return absl::InvalidArgumentError(absl::StrCat(f.label(), ": tensor '", t.name, "': adapter name '", m[3].str(),
                                                     "' is not the config's name '", config.name, "'"));
    }
    absl::StatusOr<int64_t> layer = ParseLayerIndex(f, t, m[1].str(), num_layers);
    if (!layer.ok()) return layer.status();
    if (absl::Status s = CheckFloatTensor(f, t); !s.ok()) return s;
    const int loc = m[2].str() == kLocationKeys[0] ? 0 : 1;
    modules[{*layer, loc}][m[4].str()] = &t;
  }
  return modules;
}

// The key suffixes and shapes of one module of width `m` on hidden size `h`.
std::map<std::string, std::vector<int64_t>> WantedTensors(const BottleneckConfig& config, int64_t m, int64_t h) {
  const std::string lin = config.ln_before ? "adapter_down.1." : "adapter_down.0.";
  std::map<std::string, std::vector<int64_t>> want = {
      {lin + "weight", {m, h}}, {lin + "bias", {m}}, {"adapter_up.weight", {h, m}}, {"adapter_up.bias", {h}}};
  if (config.ln_before) {
    // The library registers the LayerNorm twice: as adapter_norm_before and as adapter_down.0.
    for (const char* k : {"adapter_norm_before.weight", "adapter_norm_before.bias", "adapter_down.0.weight",
                          "adapter_down.0.bias"}) {
      want[k] = {h};
    }
  }
  if (config.ln_after) {
    want["adapter_norm_after.weight"] = {h};
    want["adapter_norm_after.bias"] = {h};
  }
  if (config.scaling_kind == "learned") want["scaling"] = {1};
  if (config.scaling_kind == "channel") want["scaling"] = {h};
  return want;
}

// Builds the module from its (checked) tensors.
absl::StatusOr<model::BottleneckModule> BuildModule(const model::SafetensorsFile& f, const BottleneckConfig& config,
                                                    const ModuleTensors& tensors, const std::string& prefix,
                                                    const model::ModelOptions& options) {
  model::BottleneckModule bm;
  bm.act = config.act;
  bm.parallel = config.is_parallel;
  bm.original_ln_before = config.original_ln_before;
  bm.original_ln_after = config.original_ln_after;
  bm.residual_before_ln = config.is_parallel || config.residual_before_ln;
  bm.adapter_residual_before_ln = config.adapter_residual_before_ln;
  bm.scaling = config.scaling;
  const std::string lin = config.ln_before ? "adapter_down.1." : "adapter_down.0.";
  absl::Status st = TorchCall(absl::StrCat(f.label(), ": ", prefix), [&] {
    c10::InferenceMode guard;
    auto get = [&](const std::string& suffix) { return ToTensor(f, *tensors.at(suffix), options); };
    bm.down_t = get(lin + "weight").t().contiguous();
    bm.down_b = get(lin + "bias");
    bm.up_t = get("adapter_up.weight").t().contiguous();
    bm.up_b = get("adapter_up.bias");
    if (config.ln_before) {
      bm.ln_before_w = get("adapter_norm_before.weight");
      bm.ln_before_b = get("adapter_norm_before.bias");
    }
    if (config.ln_after) {
      bm.ln_after_w = get("adapter_norm_after.weight");
      bm.ln_after_b = get("adapter_norm_after.bias");
    }
    if (config.scaling_kind != "float") bm.scaling_t = get("scaling");
  });
  if (!st.ok()) return st;
  return bm;
}

}  // namespace

absl::StatusOr<LoadedAdapter> LoadBottleneck(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string cfg_label = files.label + "/" + kConfigFile;
  absl::StatusOr<BottleneckConfig> config = BottleneckConfig::FromJson(files.config_json, cfg_label);
  if (!config.ok()) return config.status();
  const model::ModelConfig& mc = base.config();
  const int64_t H = mc.hidden_size;
  if (config->hidden_size != 0 && config->hidden_size != H) {
    return absl::FailedPreconditionError(absl::StrCat(cfg_label, ": 'hidden_size' is ", config->hidden_size,
                                                      " but the base model's hidden size is ", H));
  }
  const model::SafetensorsFile& f = *files.weights;
  absl::StatusOr<std::map<ModuleKey, ModuleTensors>> modules = ScanModules(f, *config, mc.num_layers);
  if (!modules.ok()) return modules.status();

  LoadedAdapter out;
  out.weights = std::make_shared<model::AdapterWeights>(mc.num_layers, model::AdapterKind::kBottleneck);
  std::set<int64_t> widths;
  std::set<std::string> locations;
  for (int64_t layer = 0; layer < mc.num_layers; ++layer) {
    for (int loc = 0; loc < model::kNumBottleneckLocations; ++loc) {
      const auto location = static_cast<model::BottleneckLocation>(loc);
      const std::string prefix = absl::StrCat("model.layers.", layer, ".", kLocationKeys[loc], ".adapters.",
                                              config->name, ".");
      auto it = modules->find({layer, loc});
      if (!config->Placed(layer, location)) {
        if (it != modules->end()) {
          return absl::FailedPreconditionError(absl::StrCat(
              f.label(), ": tensor '", prefix, it->second.begin()->first, "': ", cfg_label, " places no ",
              kLocationNames[loc], " in layer ", layer));
        }
        continue;
      }
      const int64_t m = config->Width(layer, H);
      if (m == 0) {
        return absl::InvalidArgumentError(absl::StrCat(cfg_label, ": 'config.reduction_factor' has no entry for layer ",
                                                       layer, " and no \"default\""));
      }
      static const ModuleTensors kNone;
      const ModuleTensors& tensors = it != modules->end() ? it->second : kNone;
      const std::map<std::string, std::vector<int64_t>> want = WantedTensors(*config, m, H);
      for (const auto& [suffix, shape] : want) {
        auto t = tensors.find(suffix);
        if (t == tensors.end()) {
          return absl::InvalidArgumentError(absl::StrCat(f.label(), ": missing tensor '", prefix, suffix, "' (",
                                                         cfg_label, " places a ", kLocationNames[loc], " in layer ",
                                                         layer, ")"));
        }
        if (absl::Status s = CheckShape(f, *t->second, shape); !s.ok()) return s;
      }
      for (const auto& [suffix, info] : tensors) {
        if (!want.contains(suffix)) {
          return absl::FailedPreconditionError(absl::StrCat(f.label(), ": unexpected tensor '", info->name,
                                                            "' for this config"));
        }
      }
      absl::StatusOr<model::BottleneckModule> bm = BuildModule(f, *config, tensors, prefix, base.options());
      if (!bm.ok()) return bm.status();
      out.weights->SetBottleneck(layer, location, *std::move(bm));
      widths.insert(m);
      locations.insert(kLocationNames[loc]);
    }
  }
  if (widths.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(cfg_label, ": 'config.leave_out' leaves out every layer"));
  }
  out.summary.type = "bottleneck";
  out.summary.bottleneck_widths.assign(widths.begin(), widths.end());
  out.summary.locations.assign(locations.begin(), locations.end());
  out.summary.non_linearity = config->non_linearity;
  out.summary.parallel = config->is_parallel;
  return out;
}

}  // namespace adapterd::adapters
