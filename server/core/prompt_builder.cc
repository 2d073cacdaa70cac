#include "server/core/prompt_builder.h"

#include <utility>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/text/unicode_util.h"

namespace adapterd::core {

absl::StatusOr<std::unique_ptr<PromptBuilder>> PromptBuilder::Load(const std::string& model_dir) {
  std::unique_ptr<PromptBuilder> b(new PromptBuilder());
  b->model_dir_ = model_dir;
  absl::StatusOr<std::unique_ptr<text::Tokenizer>> t = text::Tokenizer::Load(model_dir);
  if (!t.ok()) {
    if (t.status().code() != absl::StatusCode::kFailedPrecondition) return t.status();
    LOG(INFO) << "no tokenizer in " << model_dir << ": requests must send token ids";
    b->template_error_ = absl::FailedPreconditionError(
        absl::StrCat("the checkpoint ", model_dir, " has no tokenizer (tokenizer.json or tokenizer.model)"));
    return b;
  }
  b->tokenizer_ = *std::move(t);
  const std::optional<std::string>& source = b->tokenizer_->config().chat_template;
  if (!source.has_value()) {
    b->template_error_ = absl::FailedPreconditionError(absl::StrCat(
        "the checkpoint ", model_dir, " has no chat template (chat_template in tokenizer_config.json, or "
        "chat_template.jinja); send prompt_text or token ids"));
    return b;
  }
  absl::StatusOr<tmpl::ChatTemplate> parsed = tmpl::ChatTemplate::Parse(*source);
  if (!parsed.ok()) {
    b->template_error_ = absl::FailedPreconditionError(
        absl::StrCat("the checkpoint's chat template cannot be used: ", parsed.status().message()));
    LOG(WARNING) << b->template_error_.message() << "; chat requests will be refused";
    return b;
  }
  b->template_ = *std::move(parsed);
  return b;
}

absl::Status PromptBuilder::NeedTokenizer(const char* what) const {
  if (tokenizer_ != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what, " needs a tokenizer, and the checkpoint ", model_dir_,
      " has none (tokenizer.json or tokenizer.model); send prompt_token_ids"));
}

absl::StatusOr<std::string> PromptBuilder::RenderChat(const ChatPrompt& chat) const {
  if (absl::Status st = NeedTokenizer("chat"); !st.ok()) return st;
  if (!template_.has_value()) return template_error_;
  if (chat.messages.empty()) return absl::InvalidArgumentError("chat.messages must not be empty");
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (size_t i = 0; i < chat.messages.size(); ++i) {
    const ChatMessage& m = chat.messages[i];
    for (const auto& [field, value] : {std::pair{"role", &m.role}, std::pair{"content", &m.content}}) {
      if (std::optional<size_t> bad = text::FindInvalidUtf8(*value); bad.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("chat.messages[", i, "].", field,
                                                       " is not valid UTF-8: ill-formed sequence at byte offset ", *bad));
      }
    }
    messages.push_back({{"role", m.role}, {"content", m.content}});
  }
  const text::TokenizerConfig& c = tokenizer_->config();
  return tmpl::RenderChat(*template_, messages, chat.add_generation_prompt, c.bos_token.value_or(""),
                          c.eos_token.value_or(""));
}

absl::StatusOr<std::vector<int32_t>> PromptBuilder::Tokenize(const std::optional<std::string>& text,
                                                             const std::optional<ChatPrompt>& chat,
                                                             bool add_special_tokens) const {
  if (text.has_value() == chat.has_value()) {
    return absl::InvalidArgumentError("exactly one of text and chat must be set");
  }
  if (text.has_value()) {
    if (absl::Status st = NeedTokenizer("prompt_text"); !st.ok()) return st;
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(*text, add_special_tokens);
    if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("prompt_text: ", ids.status().message()));
    return ids;
  }
  absl::StatusOr<std::string> rendered = RenderChat(*chat);
  if (!rendered.ok()) return rendered.status();
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(*rendered, /*add_special_tokens=*/false);
  if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("chat: ", ids.status().message()));
  return ids;
}

absl::StatusOr<std::string> PromptBuilder::Detokenize(const std::vector<int32_t>& ids,
                                                      bool skip_special_tokens) const {
  if (absl::Status st = NeedTokenizer("detokenizing"); !st.ok()) return st;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= tokenizer_->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("token_ids[", i, "] = ", ids[i],
                                                     " is outside the vocabulary [0, ", tokenizer_->vocab_size(), ")"));
    }
  }
  return tokenizer_->Decode(ids, skip_special_tokens);
}

absl::Status PromptBuilder::Build(GenerateRequest& request) const {
  const int given = (request.engine.prompt.empty() ? 0 : 1) + (request.prompt_text.has_value() ? 1 : 0) +
                    (request.chat.has_value() ? 1 : 0);
  if (given != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "exactly one of prompt_token_ids, prompt_text and chat must be set (", given, " are)"));
  }
  if (!request.engine.prompt.empty()) return absl::OkStatus();
  absl::StatusOr<std::vector<int32_t>> ids =
      Tokenize(request.prompt_text, request.chat, request.add_special_tokens);
  if (!ids.ok()) return ids.status();
  if (ids->empty()) {
    return absl::InvalidArgumentError(request.prompt_text.has_value() ? "prompt_text tokenizes to no tokens"
                                                                      : "chat renders to no tokens");
  }
  request.engine.prompt.assign(ids->begin(), ids->end());
  return absl::OkStatus();
}

}  // namespace adapterd::core
