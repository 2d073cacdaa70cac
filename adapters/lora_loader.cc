#include "adapters/kind_loaders.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_tensors.h"
#include "adapters/lora_config.h"
#include "adapters/peft_modules.h"
#include "adapters/peft_whole_modules.h"
#include "server/common/torch_call.h"

namespace adapterd::adapters {
namespace {

// kBias is a module's own bias (bias "all" on a module LoRA does not wrap),
// kBaseBias the bias of a LoRA-wrapped module, kLoraBias lora_B's bias.
enum Slot { kA, kB, kMagnitude, kE, kLoraBias, kBaseBias, kBias, kNumSlots };

absl::Status RequirePrefix(const model::SafetensorsFile& f, const model::StTensorInfo& t) {
  if (t.name.rfind(kPeftPrefix, 0) == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(f.label(), ": tensor '", t.name,
                                                 "': not a PEFT key (expected the prefix '", kPeftPrefix, "')"));
}

// The per-layer tensor names of LoRA (and DoRA) or of AdaLoRA, whose
// parameters carry no ".weight".
std::vector<PeftKind> Kinds(const LoraConfig& c) {
  std::vector<PeftKind> kinds = {{"lora_B.bias", kLoraBias}, {"base_layer.bias", kBaseBias}, {"bias", kBias}};
  if (c.adalora) {
    kinds.insert(kinds.end(), {{"lora_A", kA}, {"lora_B", kB}, {"lora_E", kE}});
  } else {
    kinds.insert(kinds.end(), {{"lora_A.weight", kA},
                               {"lora_B.weight", kB},
                               {"lora_magnitude_vector", kMagnitude},
                               {"lora_magnitude_vector.weight", kMagnitude}});
  }
  return kinds;
}

bool OnlyOwnBias(const PeftModule& m) {
  for (int s = 0; s < kNumSlots; ++s) {
    if ((m.tensors[s] != nullptr) != (s == kBias)) return false;
  }
  return true;
}

// What a module's trained biases add to its output: (saved - base bias) for
// a saved bias (PEFT loads it over the base's; a base without one has 0),
// plus scale * lora_B.bias. Undefined when the module has neither.
absl::StatusOr<at::Tensor> BiasDelta(const model::SafetensorsFile& f, const LoraConfig& config,
                                     const model::LlamaModel& base, int64_t layer, model::Proj p,
                                     const PeftModule& found, double scale) {
  const model::StTensorInfo* saved = found.tensors[kBaseBias] != nullptr ? found.tensors[kBaseBias] : found.tensors[kBias];
  const model::StTensorInfo* lora_bias = found.tensors[kLoraBias];
  auto refuse = [&](const model::StTensorInfo* t, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(f.label(), ": tensor '", t->name, "': ", why));
  };
  if (found.tensors[kBaseBias] != nullptr && config.bias == "none") {
    return refuse(saved, "a trained bias needs 'bias' \"all\" or \"lora_only\" in adapter_config.json");
  }
  if (found.tensors[kBias] != nullptr && config.bias != "all") {
    return refuse(saved, "a trained bias of a module LoRA does not wrap needs 'bias': \"all\"");
  }
  if (lora_bias != nullptr && !config.lora_bias) return refuse(lora_bias, "lora_B has a bias but 'lora_bias' is false");
  if (saved == nullptr && lora_bias == nullptr) return at::Tensor();
  if (config.use_dora) return refuse(saved != nullptr ? saved : lora_bias, "trained biases are not supported with DoRA");
  const int64_t out_f = base.ProjWeight(layer, p).size(0);
  for (const model::StTensorInfo* t : {saved, lora_bias}) {
    if (t == nullptr) continue;
    if (absl::Status s = CheckShape(f, *t, {out_f}); !s.ok()) return s;
  }
  return TorchCall(absl::StrCat(f.label(), ": ", ModuleName(layer, p), " bias"), [&] {
    c10::InferenceMode guard;
    at::Tensor delta = at::zeros({out_f}, at::TensorOptions().dtype(base.options().dtype).device(base.options().device));
    if (saved != nullptr) {
      delta.add_(ToTensor(f, *saved, base.options()));
      if (const at::Tensor& b = base.ProjBias(layer, p); b.defined()) delta.sub_(b);
    }
    if (lora_bias != nullptr) delta.add_(ToTensor(f, *lora_bias, base.options()), scale);
    return delta;
  });
}

// Checks the tensors of one targeted module and builds it into `out`;
// `rank` is the rank it serves with (AdaLoRA: after dropping pruned ranks).
absl::Status AddModule(const model::SafetensorsFile& f, const LoraConfig& config, const model::LlamaModel& base,
                       int64_t layer, model::Proj p, const std::string& name, const PeftModule& found,
                       model::AdapterWeights& out, int64_t& rank) {
  const std::string prefix = absl::StrCat(kPeftPrefix, name, ".");
  const model::StTensorInfo* a = found.tensors[kA];
  const model::StTensorInfo* b = found.tensors[kB];
  const model::StTensorInfo* e = found.tensors[kE];
  const model::StTensorInfo* magnitude = found.tensors[kMagnitude];
  const char* suffix = config.adalora ? "" : ".weight";
  if (a == nullptr || b == nullptr || (config.adalora && e == nullptr)) {
    const char* missing = a == nullptr ? "lora_A" : b == nullptr ? "lora_B" : "lora_E";
    return absl::InvalidArgumentError(absl::StrCat(f.label(), ": missing tensor '", prefix, missing, suffix, "'"));
  }
  if (found.tensors[kBias] != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(f.label(), ": tensor '", found.tensors[kBias]->name,
                                                   "': PEFT saves a LoRA-wrapped module's bias as base_layer.bias"));
  }
  if (config.use_dora != (magnitude != nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.label(), ": ", config.use_dora ? "missing tensor '" : "unexpected tensor '", prefix,
        "lora_magnitude_vector' (use_dora is ", config.use_dora ? "true" : "false", ")"));
  }
  const at::Tensor& w = base.ProjWeight(layer, p);
  const int64_t out_f = w.size(0), in_f = w.size(1), r = config.RankFor(name);
  if (absl::Status s = CheckShape(f, *a, {r, in_f}); !s.ok()) return s;
  if (absl::Status s = CheckShape(f, *b, {out_f, r}); !s.ok()) return s;
  if (e != nullptr) {
    if (absl::Status s = CheckShape(f, *e, {r, 1}); !s.ok()) return s;
  }
  if (magnitude != nullptr) {
    if (absl::Status s = CheckShape(f, *magnitude, {out_f}); !s.ok()) return s;
  }
  const double scale = config.ScaleFor(name);
  absl::StatusOr<at::Tensor> bias = BiasDelta(f, config, base, layer, p, found, scale);
  if (!bias.ok()) return bias.status();
  model::LoraModule lm;
  absl::Status st = TorchCall(absl::StrCat(f.label(), ": ", name), [&] {
    c10::InferenceMode guard;
    if (e != nullptr) {
      // AdaLoRA: x (A ⊙ E)^T B^T; a rank whose singular value E is zero was
      // pruned and is dropped, so it costs nothing.
      at::Tensor ev = ToTensor(f, *e, base.options());
      at::Tensor keep = ev.flatten().ne(0).nonzero().flatten();
      if (keep.numel() == 0) return;
      lm = model::LoraModule::FromPeft((ToTensor(f, *a, base.options()) * ev).index_select(0, keep),
                                       ToTensor(f, *b, base.options()).index_select(1, keep), scale);
      return;
    }
    lm = model::LoraModule::FromPeft(ToLoraTensor(f, *a, base.options()), ToLoraTensor(f, *b, base.options()),
                                     scale);
    if (magnitude != nullptr) {
      // PEFT: magnitude / ||W + scale * B A|| per output row, in float32.
      at::Tensor m = ToTensor(f, *magnitude, base.options()).to(at::kFloat);
      at::Tensor merged = w.to(at::kFloat) + scale * at::mm(lm.b.to(at::kFloat), lm.a.to(at::kFloat));
      lm.dora_scale = (m / merged.norm(2, {1})).to(base.options().dtype);
    }
  });
  if (!st.ok()) return st;
  rank = lm.a_t.defined() ? lm.rank() : 0;
  if (rank > 0) out.Set(layer, p, std::move(lm));
  if (bias->defined()) out.SetBiasDelta(layer, p, *std::move(bias));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LoadedAdapter> LoadLora(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string cfg_label = files.label + "/" + kConfigFile;
  absl::StatusOr<LoraConfig> config = LoraConfig::FromJson(files.config_json, cfg_label);
  if (!config.ok()) return config.status();
  const model::SafetensorsFile& f = *files.weights;
  const int64_t num_layers = base.config().num_layers;
  LoadedAdapter out;
  out.weights = std::make_shared<model::AdapterWeights>(num_layers);
  if (absl::Status s = LoadWholeModules(files, *config, base, *out.weights, out.summary); !s.ok()) return s;
  PeftScanRules rules{Kinds(*config), kNumSlots,
                      "does not map to a linear projection of the base model (unknown target)",
                      [&f](const model::StTensorInfo& t) { return RequirePrefix(f, t); },
                      [](const model::StTensorInfo& t) { return IsWholeModuleTensor(t); }};
  absl::StatusOr<PeftModules> found = ScanPeftModules(f, num_layers, rules);
  if (!found.ok()) return found.status();
  PeftModules wrapped, own_bias;  // own_bias: modules with nothing but their own bias
  for (const auto& [key, m] : *found) (OnlyOwnBias(m) ? own_bias : wrapped).emplace(key, m);

  std::set<int64_t> ranks(out.summary.ranks.begin(), out.summary.ranks.end());
  std::set<std::string> targets(out.summary.target_modules.begin(), out.summary.target_modules.end());
  int64_t modules = 0;
  absl::Status st = ReconcilePeftModules(
      f, cfg_label, num_layers, wrapped,
      [&](const std::string& name, int64_t layer) { return config->Targets(name, layer); },
      config->adalora ? "lora_A" : "lora_A.weight",
      [&](int64_t layer, model::Proj p, const std::string& name, const PeftModule& m) {
        int64_t rank = 0;
        if (absl::Status s = AddModule(f, *config, base, layer, p, name, m, *out.weights, rank); !s.ok()) return s;
        ++modules;
        if (rank > 0) ranks.insert(rank);
        targets.insert(std::string(model::ProjName(p)));
        return absl::OkStatus();
      });
  if (!st.ok()) return st;
  for (const auto& [key, m] : own_bias) {
    absl::StatusOr<at::Tensor> delta = BiasDelta(f, *config, base, key.first, key.second, m, 1.0);
    if (!delta.ok()) return delta.status();
    out.weights->SetBiasDelta(key.first, key.second, *std::move(delta));
  }
  if (modules == 0 && out.weights->bytes() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(f.label(), ": holds no LoRA tensors"));
  }
  // One region in step order, on huge pages where the kernel gives them:
  // a decode step streams every module from memory.
  if (absl::Status s = TorchCall(absl::StrCat(f.label(), ": packing the LoRA modules"),
                                 [&] {
                                   c10::InferenceMode guard;
                                   out.weights->PackLoras();
                                 });
      !s.ok()) {
    return s;
  }
  out.summary.type = config->adalora ? "adalora" : config->use_dora ? "dora" : "lora";
  out.summary.ranks.assign(ranks.begin(), ranks.end());
  out.summary.target_modules.assign(targets.begin(), targets.end());
  out.summary.bias = config->bias;
  out.summary.lora_bias = config->lora_bias;
  return out;
}

}  // namespace adapterd::adapters
