#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_tensors.h"
#include "adapters/kind_loaders.h"
#include "adapters/peft_fields.h"
#include "server/common/torch_call.h"

namespace adapterd::adapters {
namespace {

constexpr char kTensor[] = "prompt_embeddings";

// The config's integer `key`: absent or null gives `fallback`.
absl::StatusOr<int64_t> OptionalInt(const OrderedJson& j, const char* key, int64_t fallback,
                                    const std::string& label) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) return ConfigError(label, absl::StrCat("'", key, "' must be an integer"));
  return it->get<int64_t>();
}

}  // namespace

absl::StatusOr<LoadedAdapter> LoadPrefixTuning(const AdapterFiles& files, const model::LlamaModel& base) {
  const std::string label = files.label + "/" + kConfigFile;
  OrderedJson j = OrderedJson::parse(files.config_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return ConfigError(label, "not a valid JSON object");
  const model::ModelConfig& mc = base.config();
  absl::StatusOr<int64_t> nvt = ParsePromptLearning(j, label, mc.max_position_embeddings);
  if (!nvt.ok()) return nvt.status();
  absl::StatusOr<int64_t> layers = OptionalInt(j, "num_layers", mc.num_layers, label);
  if (!layers.ok()) return layers.status();
  if (*layers != mc.num_layers) {
    return absl::FailedPreconditionError(absl::StrCat(label, ": 'num_layers' is ", *layers,
                                                      " but the base model has ", mc.num_layers, " layers"));
  }
  // PEFT sizes each layer's prefix by the key/value width (num_key_value_heads
  // * head_dim), whatever token_dim the config records.
  const int64_t width = mc.num_kv_heads * mc.head_dim;
  const model::SafetensorsFile& f = *files.weights;
  absl::StatusOr<const model::StTensorInfo*> sole = SoleTensor(f, kTensor, "prefix tuning");
  if (!sole.ok()) return sole.status();
  const model::StTensorInfo* t = *sole;
  if (absl::Status s = CheckFloatTensor(f, *t); !s.ok()) return s;
  if (absl::Status s = CheckShape(f, *t, {*nvt, mc.num_layers * 2 * width}); !s.ok()) return s;
  LoadedAdapter out;
  out.weights = std::make_shared<model::AdapterWeights>(mc.num_layers, model::AdapterKind::kPrefixTuning);
  absl::Status st = TorchCall(absl::StrCat(f.label(), ": ", kTensor), [&] {
    c10::InferenceMode guard;
    // PEFT's layout: [nvt, layer, key|value, kv head, head_dim] flattened.
    at::Tensor flat = ToTensor(f, *t, base.options());
    out.weights->SetPrefixKv(
        flat.view({*nvt, mc.num_layers, 2, mc.num_kv_heads, mc.head_dim}).permute({1, 2, 0, 3, 4}).contiguous());
  });
  if (!st.ok()) return st;
  out.summary.type = "prefix_tuning";
  out.summary.num_virtual_tokens = *nvt;
  return out;
}

}  // namespace adapterd::adapters
