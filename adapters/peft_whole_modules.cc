#include "adapters/peft_whole_modules.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "adapters/adapter_tensors.h"
#include "adapters/peft_fields.h"
#include "adapters/peft_modules.h"
#include "server/common/torch_call.h"

namespace adapterd::adapters {
namespace {

// Module names as PEFT matches them, and as keys spell them after the prefix.
constexpr char kEmbed[] = "model.embed_tokens";
constexpr char kHead[] = "lm_head";
constexpr char kScore[] = "score";

// Modules a Llama or Qwen2 causal LM has that adapterd does not replace.
constexpr std::string_view kOtherModules[] = {
    "model",  "layers",    "self_attn", "mlp",       "q_proj",          "k_proj",
    "v_proj", "o_proj",    "gate_proj", "up_proj",   "down_proj",       "input_layernorm",
    "norm",   "rotary_emb", "act_fn",   "model.norm", "post_attention_layernorm"};

std::string Key(const std::string& module, const std::string& leaf) {
  return absl::StrCat(kPeftPrefix, module, ".", leaf);
}

// The short name GetAdapter reports.
std::string ShortName(const std::string& module) { return module == kEmbed ? "embed_tokens" : module; }

// The module `entry` of config key `key` names: kEmbed, kHead, kScore, or ""
// for what matches nothing here (a SEQ_CLS adapter's "classifier").
absl::StatusOr<std::string> Resolve(const std::string& entry, const char* key, bool seq_cls,
                                    const model::ModelConfig& mc, const std::string& label) {
  if (entry == "embed_tokens" || entry == kEmbed) return std::string(kEmbed);
  if (entry == kHead) return std::string(kHead);
  if (seq_cls && entry == kScore) return std::string(kScore);
  if (seq_cls && entry == "classifier") return std::string();
  const bool known = absl::StartsWith(entry, "model.layers.") ||
                     std::find(std::begin(kOtherModules), std::end(kOtherModules), entry) != std::end(kOtherModules);
  if (known) {
    return ConfigError(label, absl::StrCat("'", key, "' names '", entry,
                                           "', which adapterd does not replace (it serves embed_tokens, lm_head "
                                           "and a SEQ_CLS adapter's score)"));
  }
  return absl::FailedPreconditionError(absl::StrCat(label, ": '", key, "' names '", entry.substr(0, 128),
                                                    "', a module the base model (", mc.architecture_name,
                                                    seq_cls ? ", with a classification head" : "",
                                                    ") does not have"));
}

// Reads the whole-module tensors of one file, remembering which it used.
class Reader {
 public:
  Reader(const AdapterFiles& files, const LoraConfig& config, const model::LlamaModel& base,
         model::AdapterWeights& out, AdapterSummary& summary)
      : files_(files), f_(*files.weights), config_(config), base_(base), mc_(base.config()), out_(out),
        summary_(summary), label_(files.label + "/" + kConfigFile) {}

  absl::Status Run();

 private:
  // The tensor `key`, checked (finite, shaped `shape`) and marked used;
  // INVALID_ARGUMENT naming it (and `why` it is needed) when absent.
  absl::StatusOr<const model::StTensorInfo*> Need(const std::string& key, const std::vector<int64_t>& shape,
                                                  const std::string& why);
  absl::StatusOr<at::Tensor> Build(const model::StTensorInfo& t, bool lora_layout);
  absl::Status LoadClassifier();
  absl::Status LoadLabels(int64_t num_labels);
  absl::Status LoadReplacement(const std::string& module);
  absl::Status LoadTokenRows(const std::string& module, const std::vector<int64_t>& ids);
  absl::Status LoadEmbeddingLora();
  absl::Status RejectUnused() const;

  const AdapterFiles& files_;
  const model::SafetensorsFile& f_;
  const LoraConfig& config_;
  const model::LlamaModel& base_;
  const model::ModelConfig& mc_;
  model::AdapterWeights& out_;
  AdapterSummary& summary_;
  const std::string label_;
  std::set<std::string> used_;
};

absl::StatusOr<const model::StTensorInfo*> Reader::Need(const std::string& key, const std::vector<int64_t>& shape,
                                                        const std::string& why) {
  const model::StTensorInfo* t = f_.Find(key);
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(f_.label(), ": missing tensor '", key, "' (", why, ")"));
  }
  if (absl::Status s = CheckFloatTensor(f_, *t); !s.ok()) return s;
  if (absl::Status s = CheckShape(f_, *t, shape); !s.ok()) return s;
  used_.insert(key);
  return t;
}

absl::StatusOr<at::Tensor> Reader::Build(const model::StTensorInfo& t, bool lora_layout) {
  return TorchCall(absl::StrCat(f_.label(), ": ", t.name), [&] {
    c10::InferenceMode guard;
    return lora_layout ? ToLoraTensor(f_, t, base_.options()) : ToTensor(f_, t, base_.options()).contiguous();
  });
}

absl::Status Reader::LoadClassifier() {
  const std::string key = Key(kScore, "weight");
  const model::StTensorInfo* t = f_.Find(key);
  if (t != nullptr && (t->shape.size() != 2 || t->shape[0] < 1)) {
    return absl::FailedPreconditionError(absl::StrCat(f_.label(), ": tensor '", key, "': shape ",
                                                      model::ShapeString(t->shape), ", expected [num_labels, ",
                                                      mc_.hidden_size, "]"));
  }
  absl::StatusOr<const model::StTensorInfo*> head =
      Need(key, {t != nullptr ? t->shape[0] : 1, mc_.hidden_size}, "task_type SEQ_CLS needs its classification head");
  if (!head.ok()) return head.status();
  absl::StatusOr<at::Tensor> w = Build(**head, false);
  if (!w.ok()) return w.status();
  out_.SetClassifier(*std::move(w));
  return LoadLabels((*head)->shape[0]);
}

// id2label as transformers writes it: {"0": "NEGATIVE", "1": "POSITIVE"}.
absl::Status ParseId2Label(const OrderedJson& v, const std::string& label, int64_t num_labels,
                           std::vector<std::string>& out) {
  if (!v.is_object()) return ConfigError(label, "'id2label' must be an object");
  if (static_cast<int64_t>(v.size()) != num_labels) {
    return absl::FailedPreconditionError(absl::StrCat(label, ": 'id2label' has ", v.size(),
                                                      " labels but the classification head has ", num_labels));
  }
  out.assign(static_cast<size_t>(num_labels), std::string());
  std::vector<bool> seen(static_cast<size_t>(num_labels), false);
  for (const auto& [k, name] : v.items()) {
    int64_t i = -1;
    if (!k.empty() && k.size() <= 9 && k.find_first_not_of("0123456789") == std::string::npos) i = std::stoll(k);
    if (i < 0 || i >= num_labels || seen[i] || !name.is_string()) {
      return ConfigError(label, absl::StrCat("'id2label' entry \"", k.substr(0, 32),
                                             "\" must map a label index below ", num_labels, " to a string, once"));
    }
    seen[i] = true;
    out[i] = name.get<std::string>();
  }
  return absl::OkStatus();
}

absl::Status Reader::LoadLabels(int64_t num_labels) {
  const OrderedJson adapter_cfg = OrderedJson::parse(files_.config_json, nullptr, false);
  OrderedJson model_cfg;
  const std::string model_label = files_.label + "/" + kModelConfigFile;
  if (!files_.model_config_json.empty()) {
    model_cfg = OrderedJson::parse(files_.model_config_json, nullptr, false);
    if (model_cfg.is_discarded() || !model_cfg.is_object()) return ConfigError(model_label, "not a valid JSON object");
  }
  if (adapter_cfg.is_object() && IsSet(adapter_cfg, "id2label")) {
    if (absl::Status s = ParseId2Label(adapter_cfg["id2label"], label_, num_labels, summary_.labels); !s.ok()) return s;
  } else if (model_cfg.is_object() && IsSet(model_cfg, "id2label")) {
    if (absl::Status s = ParseId2Label(model_cfg["id2label"], model_label, num_labels, summary_.labels); !s.ok()) {
      return s;
    }
  } else {
    for (int64_t i = 0; i < num_labels; ++i) summary_.labels.push_back(absl::StrCat(i));
  }
  if (!model_cfg.is_object()) return absl::OkStatus();
  if (auto pad = model_cfg.find("pad_token_id"); pad != model_cfg.end() && !pad->is_null()) {
    if (!pad->is_number_integer()) return ConfigError(model_label, "'pad_token_id' must be an integer");
    summary_.pad_token_id = std::max<int64_t>(-1, pad->get<int64_t>());
  }
  if (auto p = model_cfg.find("problem_type"); p != model_cfg.end() && p->is_string()) {
    summary_.multi_label = *p == "multi_label_classification";
  }
  return absl::OkStatus();
}

absl::Status Reader::LoadReplacement(const std::string& module) {
  absl::StatusOr<const model::StTensorInfo*> t =
      Need(Key(module, "weight"), {mc_.vocab_size, mc_.hidden_size},
           absl::StrCat("'modules_to_save' names ", ShortName(module)));
  if (!t.ok()) return t.status();
  absl::StatusOr<at::Tensor> w = Build(**t, false);
  if (!w.ok()) return w.status();
  if (module == kHead) {
    out_.SetLmHead(*std::move(w));
  } else {
    out_.SetEmbedTokens(*std::move(w));
  }
  return absl::OkStatus();
}

absl::Status Reader::LoadTokenRows(const std::string& module, const std::vector<int64_t>& ids) {
  const std::string what = absl::StrCat("trainable_token_indices[", ShortName(module), "]");
  std::vector<int64_t> order(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= mc_.vocab_size) {
      return absl::FailedPreconditionError(absl::StrCat(label_, ": '", what, "' holds token id ", ids[i],
                                                        ", beyond the base model's vocabulary of ", mc_.vocab_size));
    }
    order[i] = static_cast<int64_t>(i);
  }
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ids[a] < ids[b]; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (ids[order[i]] == ids[order[i - 1]]) {
      return ConfigError(label_, absl::StrCat("'", what, "' lists token id ", ids[order[i]], " twice"));
    }
  }
  absl::StatusOr<const model::StTensorInfo*> t =
      Need(Key(module, "token_adapter.trainable_tokens_delta"),
           {static_cast<int64_t>(ids.size()), mc_.hidden_size}, absl::StrCat("'", what, "' is set"));
  if (!t.ok()) return t.status();
  absl::StatusOr<at::Tensor> rows = Build(**t, false);
  if (!rows.ok()) return rows.status();
  model::TokenRows tr;
  absl::Status st = TorchCall(what, [&] {
    c10::InferenceMode guard;
    at::Tensor perm = at::tensor(at::ArrayRef<int64_t>(order), at::dtype(at::kLong)).to(base_.options().device);
    tr.rows = rows->index_select(0, perm).contiguous();
    for (int64_t i : order) tr.ids.push_back(ids[i]);
    tr.index = at::tensor(at::ArrayRef<int64_t>(tr.ids), at::dtype(at::kLong)).to(base_.options().device);
  });
  if (!st.ok()) return st;
  summary_.trainable_tokens += static_cast<int64_t>(ids.size());
  // Tied embeddings: PEFT ties the head's rows to the embedding's.
  if (module == kEmbed && mc_.tie_word_embeddings && out_.head_token_rows().empty()) out_.SetHeadTokenRows(tr);
  if (module == kHead) {
    out_.SetHeadTokenRows(std::move(tr));
  } else {
    out_.SetEmbedTokenRows(std::move(tr));
  }
  return absl::OkStatus();
}

absl::Status Reader::LoadEmbeddingLora() {
  const int64_t r = config_.RankFor(kEmbed);
  const std::string why = absl::StrCat(label_, " targets ", kEmbed);
  absl::StatusOr<const model::StTensorInfo*> a = Need(Key(kEmbed, "lora_embedding_A"), {r, mc_.vocab_size}, why);
  if (!a.ok()) return a.status();
  absl::StatusOr<const model::StTensorInfo*> b = Need(Key(kEmbed, "lora_embedding_B"), {mc_.hidden_size, r}, why);
  if (!b.ok()) return b.status();
  model::EmbeddingLora m;
  m.scale = config_.ScaleFor(kEmbed);
  absl::StatusOr<at::Tensor> at = Build(**a, true), bt = Build(**b, true);
  if (!at.ok()) return at.status();
  if (!bt.ok()) return bt.status();
  m.a_rows = at->t();  // column-major copies: their transposes are contiguous
  m.b_t = bt->t();
  out_.SetEmbeddingLora(std::move(m));
  summary_.ranks.push_back(r);
  summary_.target_modules.push_back("embed_tokens");
  // PEFT also saves the base embedding beside it; loading it overwrites the
  // base's, so one that differs is the adapter's own embedding.
  const std::string base_key = Key(kEmbed, "base_layer.weight");
  if (f_.Find(base_key) == nullptr) return absl::OkStatus();
  absl::StatusOr<const model::StTensorInfo*> saved = Need(base_key, {mc_.vocab_size, mc_.hidden_size}, "");
  if (!saved.ok()) return saved.status();
  absl::StatusOr<at::Tensor> w = Build(**saved, false);
  if (!w.ok()) return w.status();
  if (!at::equal(*w, base_.embed_tokens())) out_.SetEmbedTokens(*std::move(w));
  return absl::OkStatus();
}

absl::Status Reader::RejectUnused() const {
  for (const model::StTensorInfo& t : f_.tensors()) {
    if (!IsWholeModuleTensor(t) || used_.contains(t.name)) continue;
    const std::string_view key = std::string_view(t.name).substr(sizeof(kPeftPrefix) - 1);
    std::string why = "not a module of the base model that this adapter's config asks for";
    if (key.starts_with("lm_head.lora_") || key.starts_with("lm_head.base_layer")) {
      return absl::InvalidArgumentError(
          absl::StrCat(f_.label(), ": tensor '", t.name, "': LoRA on lm_head is not supported"));
    }
    if (key.starts_with("score.")) why = "a classification head, but task_type is not SEQ_CLS";
    if (key.starts_with("model.embed_tokens.lora_")) why = absl::StrCat("module ", kEmbed, " is not targeted by ", label_);
    return absl::FailedPreconditionError(absl::StrCat(f_.label(), ": tensor '", t.name, "': ", why));
  }
  return absl::OkStatus();
}

absl::Status Reader::Run() {
  const bool seq_cls = config_.task_type == "SEQ_CLS";
  std::set<std::string> replaced;
  for (const std::string& entry : config_.modules_to_save) {
    absl::StatusOr<std::string> m = Resolve(entry, "modules_to_save", seq_cls, mc_, label_);
    if (!m.ok()) return m.status();
    if (!m->empty() && *m != kScore) replaced.insert(*m);
  }
  std::map<std::string, std::vector<int64_t>> tokens;
  for (const auto& [entry, ids] : config_.trainable_tokens) {
    absl::StatusOr<std::string> m = Resolve(entry, "trainable_token_indices", false, mc_, label_);
    if (!m.ok()) return m.status();
    if (replaced.contains(*m) || tokens.contains(*m)) {
      return ConfigError(label_, absl::StrCat("'trainable_token_indices' names ", ShortName(*m),
                                              ", which 'modules_to_save' or another entry already covers"));
    }
    tokens[*m] = ids;
  }
  const bool embed_lora = !config_.all_linear && config_.Targets(kEmbed, -1);
  if (!config_.all_linear && config_.Targets(kHead, -1)) {
    return ConfigError(label_, "LoRA on lm_head is not supported ('target_modules' selects lm_head)");
  }
  if (embed_lora && (config_.adalora || replaced.contains(kEmbed) || tokens.contains(kEmbed))) {
    return ConfigError(label_, "LoRA on embed_tokens cannot be combined with AdaLoRA, with embed_tokens in "
                               "'modules_to_save' or with trainable tokens on it");
  }
  if (seq_cls) {
    if (absl::Status s = LoadClassifier(); !s.ok()) return s;
    summary_.modules_to_save.push_back(kScore);
  }
  for (const std::string& m : replaced) {
    if (absl::Status s = LoadReplacement(m); !s.ok()) return s;
    summary_.modules_to_save.push_back(ShortName(m));
  }
  for (const auto& [m, ids] : tokens) {
    if (absl::Status s = LoadTokenRows(m, ids); !s.ok()) return s;
  }
  if (embed_lora) {
    if (absl::Status s = LoadEmbeddingLora(); !s.ok()) return s;
  }
  summary_.task_type = seq_cls ? "SEQ_CLS" : "CAUSAL_LM";
  std::sort(summary_.modules_to_save.begin(), summary_.modules_to_save.end());
  return RejectUnused();
}

}  // namespace

bool IsWholeModuleTensor(const model::StTensorInfo& t) {
  const std::string_view name = t.name;
  return name.starts_with(kPeftPrefix) && !name.substr(sizeof(kPeftPrefix) - 1).starts_with("model.layers.");
}

absl::Status LoadWholeModules(const AdapterFiles& files, const LoraConfig& config, const model::LlamaModel& base,
                              model::AdapterWeights& out, AdapterSummary& summary) {
  return Reader(files, config, base, out, summary).Run();
}

}  // namespace adapterd::adapters
