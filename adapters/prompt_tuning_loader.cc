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
  const model::ModelConfig& mc = base.config();
  absl::StatusOr<int64_t> parsed = ParsePromptLearning(j, label, mc.max_position_embeddings);
  if (!parsed.ok()) return parsed.status();
  const int64_t num_virtual = *parsed;
  if (auto d = j.find("token_dim"); d != j.end() && !d->is_null()) {
    if (!d->is_number_integer() || d->get<int64_t>() != mc.hidden_size) {
      return absl::FailedPreconditionError(absl::StrCat(label, ": 'token_dim' is ", d->dump(),
                                                        " but the base model's hidden size is ", mc.hidden_size));
    }
  }
  const model::SafetensorsFile& f = *files.weights;
  absl::StatusOr<const model::StTensorInfo*> sole = SoleTensor(f, kTensor, "prompt tuning");
  if (!sole.ok()) return sole.status();
  const model::StTensorInfo* t = *sole;
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
