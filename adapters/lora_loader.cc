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
#include "server/common/torch_call.h"

namespace adapterd::adapters {
namespace {

enum Slot { kA, kB, kMagnitude, kNumSlots };

// LoRA names the PEFT tensors it does not support before the generic scan
// calls them unknown.
absl::Status RejectUnsupported(const model::SafetensorsFile& f, const model::StTensorInfo& t) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(f.label(), ": tensor '", t.name, "': ", what));
  };
  if (t.name.rfind(kPeftPrefix, 0) != 0) {
    return bad(absl::StrCat("not a PEFT key (expected the prefix '", kPeftPrefix, "')"));
  }
  const std::string_view key = std::string_view(t.name).substr(sizeof(kPeftPrefix) - 1);
  if (key.find("lora_embedding_") != std::string_view::npos || key.starts_with("embed_tokens") ||
      key.starts_with("lm_head")) {
    return bad("LoRA on embed_tokens or lm_head is not supported");
  }
  if (key.find(".lora_B.bias") != std::string_view::npos) return bad("LoRA biases (lora_bias) are not supported");
  return absl::OkStatus();
}

// Checks the tensors of one targeted module and builds it into `out`.
absl::Status AddModule(const model::SafetensorsFile& f, const LoraConfig& config, const model::LlamaModel& base,
                       int64_t layer, model::Proj p, const std::string& name, const PeftModule& found,
                       model::AdapterWeights& out) {
  const std::string prefix = absl::StrCat(kPeftPrefix, name, ".");
  const model::StTensorInfo* a = found.tensors[kA];
  const model::StTensorInfo* b = found.tensors[kB];
  const model::StTensorInfo* magnitude = found.tensors[kMagnitude];
  if (a == nullptr || b == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.label(), ": missing tensor '", prefix, a == nullptr ? "lora_A" : "lora_B", ".weight'"));
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
  if (magnitude != nullptr) {
    if (absl::Status s = CheckShape(f, *magnitude, {out_f}); !s.ok()) return s;
  }
  model::LoraModule lm;
  const double scale = config.ScaleFor(name);
  absl::Status st = TorchCall(absl::StrCat(f.label(), ": ", name), [&] {
    c10::InferenceMode guard;
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
  out.Set(layer, p, std::move(lm));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LoadedAdapter> LoadLora(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string cfg_label = files.label + "/" + kConfigFile;
  absl::StatusOr<LoraConfig> config = LoraConfig::FromJson(files.config_json, cfg_label);
  if (!config.ok()) return config.status();
  const model::SafetensorsFile& f = *files.weights;
  const int64_t num_layers = base.config().num_layers;
  PeftScanRules rules{{{"lora_A.weight", kA},
                       {"lora_B.weight", kB},
                       {"lora_magnitude_vector", kMagnitude},
                       {"lora_magnitude_vector.weight", kMagnitude}},
                      kNumSlots,
                      "does not map to a linear projection of the base model (unknown target)",
                      [&f](const model::StTensorInfo& t) { return RejectUnsupported(f, t); }};
  absl::StatusOr<PeftModules> found = ScanPeftModules(f, num_layers, rules);
  if (!found.ok()) return found.status();

  LoadedAdapter out;
  out.weights = std::make_shared<model::AdapterWeights>(num_layers);
  std::set<int64_t> ranks;
  std::set<std::string> targets;
  absl::Status st = ReconcilePeftModules(
      f, cfg_label, num_layers, *found,
      [&](const std::string& name, int64_t layer) { return config->Targets(name, layer); }, "lora_A.weight",
      [&](int64_t layer, model::Proj p, const std::string& name, const PeftModule& m) {
        if (absl::Status s = AddModule(f, *config, base, layer, p, name, m, *out.weights); !s.ok()) return s;
        ranks.insert(config->RankFor(name));
        targets.insert(std::string(model::ProjName(p)));
        return absl::OkStatus();
      });
  if (!st.ok()) return st;
  if (ranks.empty()) return absl::InvalidArgumentError(absl::StrCat(f.label(), ": holds no LoRA tensors"));
  out.summary.type = config->use_dora ? "dora" : "lora";
  out.summary.ranks.assign(ranks.begin(), ranks.end());
  out.summary.target_modules.assign(targets.begin(), targets.end());
  return out;
}

}  // namespace adapterd::adapters
