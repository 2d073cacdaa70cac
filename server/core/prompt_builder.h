// Turns text and chats into the token ids the engine runs.
#ifndef ADAPTERD_SERVER_CORE_PROMPT_BUILDER_H_
#define ADAPTERD_SERVER_CORE_PROMPT_BUILDER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/core/generate_request.h"
#include "server/template/chat_template.h"
#include "server/text/tokenizer.h"

namespace adapterd::core {

// A PromptBuilder holds the checkpoint's tokenizer and chat template, if it
// has them, and builds prompts from them: text is tokenized, a chat is
// rendered with the template (as transformers' apply_chat_template does)
// and then tokenized without adding special tokens, since the template
// writes its own.
//
// Errors name what is wrong: INVALID_ARGUMENT for a request that is not
// one prompt, for text that is not UTF-8 (with the byte offset) and for a
// template's own refusal (its message); FAILED_PRECONDITION when the
// checkpoint has no tokenizer, or no usable chat template, for what was
// asked. Immutable after Load; thread-safe.
class PromptBuilder {
 public:
  // Loads the tokenizer from `model_dir` when it has tokenizer.json or
  // tokenizer.model; without either, text and chats are refused. A
  // tokenizer file that is malformed or uses an unsupported feature fails
  // here, naming the file and the JSON path. A chat template outside the
  // supported subset does not: chats are then refused with its error.
  static absl::StatusOr<std::unique_ptr<PromptBuilder>> Load(const std::string& model_dir);

  // Fills request.engine.prompt from whichever prompt the request has.
  absl::Status Build(GenerateRequest& request) const;
  // The token ids of `text` or of `chat`.
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::optional<std::string>& text,
                                                const std::optional<ChatPrompt>& chat,
                                                bool add_special_tokens) const;
  absl::StatusOr<std::string> Detokenize(const std::vector<int32_t>& ids, bool skip_special_tokens) const;
  // The chat rendered as text, before tokenization.
  absl::StatusOr<std::string> RenderChat(const ChatPrompt& chat) const;

  // Null when the checkpoint has no tokenizer.
  const text::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  bool has_chat_template() const { return template_.has_value(); }

 private:
  PromptBuilder() = default;
  absl::Status NeedTokenizer(const char* what) const;

  std::string model_dir_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::optional<tmpl::ChatTemplate> template_;
  absl::Status template_error_;  // why there is no usable template
};

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_PROMPT_BUILDER_H_
