#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "adapters/adapter_tensors.h"
#include "adapters/kind_loaders.h"
#include "adapters/peft_fields.h"
#include "server/common/torch_call.h"

namespace adapterd::adapters {
namespace {

constexpr char kPrefix[] = "base_model.model.model.layers.";
constexpr char kPromptSuffix[] = ".self_attn.adaption_prompt";
constexpr char kGateSuffix[] = ".self_attn.adaption_gate";

// The adapter's config: adapter_len and adapter_layers, both required.
struct AdaptionConfig {
  int64_t length = 0;
  int64_t layers = 0;
};

absl::StatusOr<AdaptionConfig> ParseConfig(const OrderedJson& j, const std::string& label, int64_t num_layers) {
  AdaptionConfig c;
  for (auto [key, field] : {std::pair{"adapter_len", &c.length}, std::pair{"adapter_layers", &c.layers}}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() < 1) {
      return ConfigError(label, absl::StrCat("'", key, "' must be a positive integer"));
    }
    *field = it->get<int64_t>();
  }
  if (c.layers > num_layers) {
    return absl::FailedPreconditionError(absl::StrCat(label, ": 'adapter_layers' is ", c.layers,
                                                      " but the base model has ", num_layers, " layers"));
  }
  if (auto t = j.find("target_modules"); t != j.end() && !t->is_null() && *t != "self_attn") {
    return ConfigError(label, absl::StrCat("'target_modules' is ", t->dump(), "; only \"self_attn\" is supported"));
  }
  if (IsSet(j, "modules_to_save")) {
    return ConfigError(label, absl::StrCat("'modules_to_save' is not supported (", j["modules_to_save"].dump(), ")"));
  }
  return c;
}

// The layer index that tensor `t` (named <kPrefix><i><suffix>) belongs to.
absl::StatusOr<int64_t> LayerOf(const model::SafetensorsFile& f, const model::StTensorInfo& t,
                                const std::string& suffix, int64_t num_layers) {
  const std::string_view name = t.name;
  const std::string_view digits = name.substr(sizeof(kPrefix) - 1, name.size() - (sizeof(kPrefix) - 1) - suffix.size());
  return ParseLayerIndex(f, t, digits, num_layers);
}

}  // namespace

absl::StatusOr<LoadedAdapter> LoadAdaptionPrompt(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string label = files.label + "/" + kConfigFile;
  OrderedJson j = OrderedJson::parse(files.config_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return ConfigError(label, "not a valid JSON object");
  const model::ModelConfig& mc = base.config();
  absl::StatusOr<AdaptionConfig> cfg = ParseConfig(j, label, mc.num_layers);
  if (!cfg.ok()) return cfg.status();
  const model::SafetensorsFile& f = *files.weights;
  // PEFT wraps the attention of the last adapter_layers layers.
  const int64_t first = mc.num_layers - cfg->layers;
  std::vector<const model::StTensorInfo*> prompts(mc.num_layers, nullptr), gates(mc.num_layers, nullptr);
  for (const model::StTensorInfo& t : f.tensors()) {
    const bool prompt = absl::EndsWith(t.name, kPromptSuffix), gate = absl::EndsWith(t.name, kGateSuffix);
    if (!absl::StartsWith(t.name, kPrefix) || (!prompt && !gate)) {
      return absl::InvalidArgumentError(absl::StrCat(
          f.label(), ": unexpected tensor '", t.name, "' (LLaMA-Adapter holds only ", kPrefix, "<i>", kPromptSuffix,
          " and ", kPrefix, "<i>", kGateSuffix, ")"));
    }
    absl::StatusOr<int64_t> layer = LayerOf(f, t, prompt ? kPromptSuffix : kGateSuffix, mc.num_layers);
    if (!layer.ok()) return layer.status();
    if (*layer < first) {
      return absl::FailedPreconditionError(absl::StrCat(f.label(), ": tensor '", t.name, "': layer ", *layer,
                                                        " is not among the last 'adapter_layers' (", cfg->layers,
                                                        ") layers"));
    }
    if (absl::Status s = CheckFloatTensor(f, t); !s.ok()) return s;
    if (absl::Status s = CheckShape(f, t, prompt ? std::vector<int64_t>{1, cfg->length, mc.hidden_size}
                                                 : std::vector<int64_t>{1});
        !s.ok()) {
      return s;
    }
    (prompt ? prompts : gates)[*layer] = &t;
  }
  for (int64_t l = first; l < mc.num_layers; ++l) {
    if (prompts[l] == nullptr || gates[l] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(f.label(), ": missing tensor '", kPrefix, l,
                                                     prompts[l] == nullptr ? kPromptSuffix : kGateSuffix, "'"));
    }
  }
  LoadedAdapter out;
  out.weights = std::make_shared<model::AdapterWeights>(mc.num_layers, model::AdapterKind::kAdaptionPrompt);
  const int64_t repeat = mc.num_heads / mc.num_kv_heads;
  absl::Status st = TorchCall(absl::StrCat(f.label(), ": computing the adaption prompt's keys and values"), [&] {
    c10::InferenceMode guard;
    for (int64_t l = first; l < mc.num_layers; ++l) {
      at::Tensor prompt = ToTensor(f, *prompts[l], base.options()).view({cfg->length, mc.hidden_size});
      auto project = [&](model::Proj p) {
        const at::Tensor& b = base.ProjBias(l, p);
        at::Tensor y = at::linear(prompt, base.ProjWeight(l, p), b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
        // [len, kv heads, hd] -> [heads, len, hd], each KV head repeated for its query heads.
        return y.view({cfg->length, mc.num_kv_heads, mc.head_dim}).repeat_interleave(repeat, 1).transpose(0, 1);
      };
      model::AdaptionPromptModule m;
      m.k_t = project(model::Proj::kK).transpose(1, 2).contiguous();
      m.v = project(model::Proj::kV).contiguous();
      m.gate = ToTensor(f, *gates[l], base.options());
      out.weights->SetAdaptionPrompt(l, std::move(m));
    }
  });
  if (!st.ok()) return st;
  out.summary.type = "adaption_prompt";
  out.summary.num_virtual_tokens = 0;
  out.summary.adapter_len = cfg->length;
  out.summary.adapter_layers = cfg->layers;
  return out;
}

}  // namespace adapterd::adapters
