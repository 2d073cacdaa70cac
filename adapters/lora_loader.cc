#include "adapters/lora_loader.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <regex>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/adapter_tensors.h"
#include "server/common/torch_call.h"

namespace adapterd::adapters {
namespace {

constexpr char kPrefix[] = "base_model.model.";

struct ModuleTensors {
  const model::StTensorInfo* a = nullptr;
  const model::StTensorInfo* b = nullptr;
  const model::StTensorInfo* magnitude = nullptr;
};

}  // namespace

absl::StatusOr<LoadedLora> LoadLora(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string cfg_label = files.label + "/" + kConfigFile;
  absl::StatusOr<LoraConfig> config = LoraConfig::FromJson(files.config_json, cfg_label);
  if (!config.ok()) return config.status();
  const model::SafetensorsFile& f = *files.weights;
  const model::ModelConfig& mc = base.config();
  auto bad = [&](const std::string& tensor, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(f.label(), ": tensor '", tensor, "': ", what));
  };
  auto mismatch = [&](const std::string& tensor, const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(f.label(), ": tensor '", tensor, "': ", what));
  };

  static const std::regex kKey(
      R"(model\.layers\.(\d+)\.((?:self_attn|mlp)\.[a-z_]+)\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector(?:\.weight)?))");
  std::map<std::pair<int64_t, int>, ModuleTensors> modules;
  for (const model::StTensorInfo& t : f.tensors()) {
    if (t.name.rfind(kPrefix, 0) != 0) {
      return bad(t.name, absl::StrCat("not a PEFT key (expected the prefix '", kPrefix, "')"));
    }
    const std::string key = t.name.substr(sizeof(kPrefix) - 1);
    if (key.find("lora_embedding_") != std::string::npos || key.find("embed_tokens") == 0 ||
        key.find("lm_head") == 0) {
      return bad(t.name, "LoRA on embed_tokens or lm_head is not supported");
    }
    if (key.find(".lora_B.bias") != std::string::npos) {
      return bad(t.name, "LoRA biases (lora_bias) are not supported");
    }
    std::smatch m;
    model::Proj proj;
    if (!std::regex_match(key, m, kKey) || !ParseProj(m[2].str(), &proj)) {
      return mismatch(t.name, "does not map to a linear projection of the base model "
                              "(unknown target)");
    }
    int64_t layer = -1;
    try {
      layer = std::stoll(m[1].str());
    } catch (...) {
    }
    if (layer < 0 || layer >= mc.num_layers) {
      return mismatch(t.name, absl::StrCat("layer ", m[1].str(), " does not exist (the base has ",
                                           mc.num_layers, " layers)"));
    }
    if (absl::Status st = CheckFloatDtype(f, t); !st.ok()) return st;
    ModuleTensors& mt = modules[{layer, static_cast<int>(proj)}];
    const std::string kind = m[3].str();
    (kind == "lora_A.weight" ? mt.a : kind == "lora_B.weight" ? mt.b : mt.magnitude) = &t;
  }

  LoadedLora out;
  out.weights = std::make_shared<model::AdapterWeights>(mc.num_layers);
  out.summary.dora = config->use_dora;
  std::set<int64_t> ranks;
  std::set<std::string> targets;
  for (int64_t layer = 0; layer < mc.num_layers; ++layer) {
    for (int pi = 0; pi < model::kNumProj; ++pi) {
      const model::Proj p = static_cast<model::Proj>(pi);
      const std::string name = ModuleName(layer, p);
      const std::string tensor_prefix = absl::StrCat(kPrefix, name, ".");
      auto it = modules.find({layer, pi});
      const bool targeted = config->Targets(name, layer);
      if (it == modules.end()) {
        if (targeted) {
          return absl::InvalidArgumentError(absl::StrCat(
              f.label(), ": missing tensor '", tensor_prefix, "lora_A.weight' (", cfg_label,
              " targets ", name, ")"));
        }
        continue;
      }
      const ModuleTensors& mt = it->second;
      if (!targeted) {
        return mismatch(tensor_prefix + "lora_A.weight",
                        absl::StrCat("module ", name, " is not targeted by ", cfg_label));
      }
      if (mt.a == nullptr || mt.b == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(f.label(), ": missing tensor '", tensor_prefix,
                                                       mt.a == nullptr ? "lora_A" : "lora_B", ".weight'"));
      }
      if (config->use_dora != (mt.magnitude != nullptr)) {
        return absl::InvalidArgumentError(absl::StrCat(
            f.label(), ": ", config->use_dora ? "missing tensor '" : "unexpected tensor '",
            tensor_prefix, "lora_magnitude_vector' (use_dora is ",
            config->use_dora ? "true" : "false", ")"));
      }
      const at::Tensor& w = base.ProjWeight(layer, p);
      const int64_t out_f = w.size(0), in_f = w.size(1), r = config->RankFor(name);
      const std::vector<int64_t> want_a = {r, in_f}, want_b = {out_f, r}, want_m = {out_f};
      if (mt.a->shape != want_a) {
        return mismatch(mt.a->name, absl::StrCat("shape ", ShapeString(mt.a->shape), ", expected ", ShapeString(want_a)));
      }
      if (mt.b->shape != want_b) {
        return mismatch(mt.b->name, absl::StrCat("shape ", ShapeString(mt.b->shape), ", expected ", ShapeString(want_b)));
      }
      if (mt.magnitude != nullptr && mt.magnitude->shape != want_m) {
        return mismatch(mt.magnitude->name,
                        absl::StrCat("shape ", ShapeString(mt.magnitude->shape), ", expected ", ShapeString(want_m)));
      }
      model::LoraModule lm;
      const double scale = config->ScaleFor(name);
      absl::Status st = TorchCall(absl::StrCat(f.label(), ": ", name), [&] {
        c10::InferenceMode guard;
        lm = model::LoraModule::FromPeft(ToLoraTensor(f, *mt.a, base.options()),
                                         ToLoraTensor(f, *mt.b, base.options()), scale);
        if (mt.magnitude != nullptr) {
          // PEFT: magnitude / ||W + scale * B A|| per output row, in float32.
          at::Tensor m = ToTensor(f, *mt.magnitude, base.options()).to(at::kFloat);
          at::Tensor merged = w.to(at::kFloat) + scale * at::mm(lm.b.to(at::kFloat), lm.a.to(at::kFloat));
          lm.dora_scale = (m / merged.norm(2, {1})).to(base.options().dtype);
        }
      });
      if (!st.ok()) return st;
      ranks.insert(r);
      targets.insert(std::string(model::ProjName(p)));
      out.weights->Set(layer, p, std::move(lm));
    }
  }
  if (ranks.empty()) return absl::InvalidArgumentError(absl::StrCat(f.label(), ": holds no LoRA tensors"));
  out.summary.ranks.assign(ranks.begin(), ranks.end());
  out.summary.target_modules.assign(targets.begin(), targets.end());
  return out;
}

}  // namespace adapterd::adapters
