// The text layer's entry point: one model's tokenizer, loaded from a model
// directory, with Hugging Face transformers' encode/decode semantics.
#ifndef ADAPTERD_SERVER_TEXT_TOKENIZER_H_
#define ADAPTERD_SERVER_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/tokenizer_backend.h"
#include "server/text/tokenizer_config.h"

namespace adapterd::text {

// A Tokenizer is immutable once loaded and thread-safe: any number of
// threads may encode and decode at once.
//
// Encode(text, add_special_tokens) equals transformers'
// `tokenizer(text, add_special_tokens=...)["input_ids"]` for a tokenizer.json
// (the post-processor's template, rebuilt from add_bos_token /
// add_eos_token for the Llama tokenizer classes as transformers does), and
// SentencePiece's `encode` plus BOS (add_bos_token, default true) and EOS
// (add_eos_token, default false) for a tokenizer.model. Decode equals
// `tokenizer.decode(ids, skip_special_tokens=...)`, with
// clean_up_tokenization_spaces as tokenizer_config.json says (default
// false, transformers' default); for a tokenizer.model it equals
// SentencePiece's `decode` of the ids, the control and unknown ids left out
// when skipping special tokens. Ids that name no token are ignored.
class Tokenizer {
 public:
  // `dir` holds tokenizer.json, or else tokenizer.model, and optionally
  // tokenizer_config.json and chat_template.jinja. INVALID_ARGUMENT naming
  // the file and field for anything malformed or unsupported;
  // FAILED_PRECONDITION when neither tokenizer file is there.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& dir);
  // From the text of tokenizer.json and tokenizer_config.json (which may be
  // empty); errors start with `label`.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                             std::string_view tokenizer_config_json,
                                                             std::string label);
  // From the bytes of a SentencePiece tokenizer.model.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromSentencePiece(std::string_view model,
                                                                      std::string_view tokenizer_config_json,
                                                                      std::string label);

  // INVALID_ARGUMENT naming the byte offset when `text` is not UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const;
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const;
  // Decode as a stream of ids: Push appends the text an id makes final,
  // Finish the rest; together they equal Decode.
  std::unique_ptr<TokenStream> NewDecodeStream(bool skip_special_tokens) const;

  int64_t vocab_size() const { return backend_->vocab_size(); }
  bool IsSpecial(int32_t id) const { return backend_->IsSpecial(id); }
  std::optional<int32_t> TokenToId(std::string_view token) const { return backend_->TokenToId(token); }
  std::optional<std::string> IdToToken(int32_t id) const { return backend_->IdToToken(id); }
  const TokenizerConfig& config() const { return config_; }
  std::optional<int32_t> bos_id() const { return config_.bos_token_id; }
  std::optional<int32_t> eos_id() const { return config_.eos_token_id; }
  const std::string& label() const { return label_; }

 private:
  Tokenizer() = default;
  void ResolveTokenIds();

  std::unique_ptr<TokenizerBackend> backend_;
  TokenizerConfig config_;
  bool clean_up_spaces_ = false;
  std::string label_;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_TOKENIZER_H_
