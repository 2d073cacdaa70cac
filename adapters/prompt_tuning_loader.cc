#include "adapters/kind_loaders.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_tensors.h"
#include "adapters/peft_fields.h"
#include "server/common/torch_call.h"

namespace adapterd::adapters {
namespace {

constexpr char kTensor[] = "prompt_embeddings";

}  // namespace

absl::StatusOr<LoadedAdapter> LoadPromptTuning(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string label = files.label + "/" + kConfigFile;
  OrderedJson j = OrderedJson::parse(files.config_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return ConfigError(label, "not a valid JSON object");
  if (IsSet(j, "modules_to_save")) {
    return ConfigError(label, absl::StrCat("'modules_to_save' is not supported (", j["modules_to_save"].dump(), ")"));
  }
  const model::ModelConfig& mc = base.config();
  auto v = j.find("num_virtual_tokens");
  if (v == j.end() || !v->is_number_integer() || v->get<int64_t>() < 1) {
    return ConfigError(label, "'num_virtual_tokens' must be a positive integer");
  }
  const int64_t num_virtual = v->get<int64_t>();
  if (num_virtual >= mc.max_position_embeddings) {
    return absl::FailedPreconditionError(absl::StrCat(label, ": 'num_virtual_tokens' ", num_virtual,
                                                      " leaves no room in the context length ",
                                                      mc.max_position_embeddings));
  }
  if (auto d = j.find("token_dim"); d != j.end() && !d->is_null()) {
    if (!d->is_number_integer() || d->get<int64_t>() != mc.hidden_size) {
      return absl::FailedPreconditionError(absl::StrCat(label, ": 'token_dim' is ", d->dump(),
                                                        " but the base model's hidden size is ", mc.hidden_size));
    }
  }
  if (auto s = j.find("num_transformer_submodules"); s != j.end() && !s->is_null() && *s != 1) {
    return ConfigError(label, absl::StrCat("'num_transformer_submodules' is ", s->dump(),
                                           "; only 1 (decoder-only models) is supported"));
  }
  const model::SafetensorsFile& f = *files.weights;
  const model::StTensorInfo* t = f.Find(kTensor);
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat(f.label(), ": missing tensor '", kTensor, "'"));
  for (const model::StTensorInfo& other : f.tensors()) {
    if (other.name != kTensor) {
      return absl::InvalidArgumentError(absl::StrCat(f.label(), ": unexpected tensor '", other.name,
                                                     "' (prompt tuning holds only '", kTensor, "')"));
    }
  }
  if (absl::Status s = CheckFloatTensor(f, *t); !s.ok()) return s;
  if (absl::Status s = CheckShape(f, *t, {num_virtual, mc.hidden_size}); !s.ok()) return s;
  LoadedAdapter out;
  out.weights = std::make_shared<model::AdapterWeights>(mc.num_layers, model::AdapterKind::kPromptTuning);
  absl::Status st = TorchCall(absl::StrCat(f.label(), ": ", kTensor), [&] {
    c10::InferenceMode guard;
    out.weights->SetPrompt(ToTensor(f, *t, base.options()).contiguous());
  });
  if (!st.ok()) return st;
  out.summary.type = "prompt_tuning";
  out.summary.num_virtual_tokens = out.weights->num_virtual_tokens();
  return out;
}

}  // namespace adapterd::adapters
