#include "server/text/tokenizer_config.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/text/json_fields.h"

namespace adapterd::text {
namespace {

absl::Status Bad(const std::string& label, const std::string& field, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(label, ": ", field, " ", std::string(what)));
}

absl::StatusOr<std::optional<std::string>> TokenField(const Json& j, const char* key, const std::string& label) {
  const Json* v = JsonMember(j, key);
  if (v == nullptr) return std::optional<std::string>();
  if (v->is_string()) return std::optional<std::string>(v->get<std::string>());
  if (v->is_object()) {
    const Json* c = JsonMember(*v, "content");
    if (c != nullptr && c->is_string()) return std::optional<std::string>(c->get<std::string>());
  }
  return Bad(label, key, "must be a string or an object with a string \"content\"");
}

absl::StatusOr<std::optional<std::string>> ChatTemplate(const Json& j, const std::string& label) {
  const Json* v = JsonMember(j, "chat_template");
  if (v == nullptr) return std::optional<std::string>();
  if (v->is_string()) return std::optional<std::string>(v->get<std::string>());
  if (!v->is_array()) return Bad(label, "chat_template", "must be a string or a list of {name, template}");
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& e = (*v)[i];
    const Json* name = JsonMember(e, "name");
    const Json* tmpl = JsonMember(e, "template");
    if (name == nullptr || !name->is_string() || tmpl == nullptr || !tmpl->is_string()) {
      return Bad(label, JsonIndex("chat_template", i), "must be {\"name\": string, \"template\": string}");
    }
    if (*name == "default") return std::optional<std::string>(tmpl->get<std::string>());
  }
  return std::optional<std::string>();
}

}  // namespace

absl::StatusOr<TokenizerConfig> TokenizerConfig::FromJson(std::string_view text, const std::string& label) {
  TokenizerConfig c;
  if (text.empty()) return c;
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not a valid JSON object"));
  }
  for (auto [key, dst] : {std::pair{"bos_token", &c.bos_token}, std::pair{"eos_token", &c.eos_token},
                          std::pair{"pad_token", &c.pad_token}, std::pair{"unk_token", &c.unk_token}}) {
    absl::StatusOr<std::optional<std::string>> v = TokenField(j, key, label);
    if (!v.ok()) return v.status();
    *dst = *std::move(v);
  }
  for (auto [key, dst] : {std::pair{"add_bos_token", &c.add_bos_token}, std::pair{"add_eos_token", &c.add_eos_token},
                          std::pair{"clean_up_tokenization_spaces", &c.clean_up_tokenization_spaces}}) {
    absl::StatusOr<std::optional<bool>> v = OptionalBool(j, key, "");
    if (!v.ok()) return absl::InvalidArgumentError(absl::StrCat(label, ": ", v.status().message()));
    *dst = *v;
  }
  absl::StatusOr<std::optional<std::string>> cls = OptionalString(j, "tokenizer_class", "");
  if (!cls.ok()) return absl::InvalidArgumentError(absl::StrCat(label, ": ", cls.status().message()));
  c.tokenizer_class = *std::move(cls);
  absl::StatusOr<std::optional<std::string>> tmpl = ChatTemplate(j, label);
  if (!tmpl.ok()) return tmpl.status();
  c.chat_template = *std::move(tmpl);
  return c;
}

bool TokenizerConfig::RebuildsTemplate() const {
  if (!tokenizer_class.has_value()) return false;
  for (std::string_view name : {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer",
                                "CodeLlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast"}) {
    if (*tokenizer_class == name) return true;
  }
  return false;
}

}  // namespace adapterd::text
