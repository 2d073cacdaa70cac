// tokenizer_config.json: the special tokens, BOS/EOS policy, chat template
// and decode clean-up that transformers reads beside the tokenizer.
#ifndef ADAPTERD_SERVER_TEXT_TOKENIZER_CONFIG_H_
#define ADAPTERD_SERVER_TEXT_TOKENIZER_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace adapterd::text {

// Every field is optional. Token fields accept a string or an AddedToken
// object ({"content": ...}). A plain value; thread-compatible.
struct TokenizerConfig {
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
  std::optional<bool> add_bos_token, add_eos_token;
  // The string form; the "default" entry of the list-of-{name, template}
  // form; or the contents of chat_template.jinja, which wins when present.
  std::optional<std::string> chat_template;
  std::optional<bool> clean_up_tokenization_spaces;
  std::optional<std::string> tokenizer_class;
  // The token fields resolved through the tokenizer's vocabulary and added
  // tokens (set by Tokenizer; nullopt when the token is absent).
  std::optional<int32_t> bos_token_id, eos_token_id, pad_token_id, unk_token_id;

  // Parses tokenizer_config.json text; empty text is an empty config.
  // INVALID_ARGUMENT naming `label` and the field for malformed values.
  static absl::StatusOr<TokenizerConfig> FromJson(std::string_view json, const std::string& label);

  // Whether transformers' tokenizer class for this config rebuilds the
  // post-processor from add_bos_token / add_eos_token (the Llama family).
  bool RebuildsTemplate() const;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_TOKENIZER_CONFIG_H_
