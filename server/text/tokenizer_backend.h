// The interface between Tokenizer and the two ways a tokenizer is stored:
// tokenizer.json (HfTokenizer) and a SentencePiece tokenizer.model
// (SentencePieceTokenizer).
#ifndef ADAPTERD_SERVER_TEXT_TOKENIZER_BACKEND_H_
#define ADAPTERD_SERVER_TEXT_TOKENIZER_BACKEND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace adapterd::text {

// Decodes ids one at a time. Push appends the text that the id makes final;
// Finish appends the rest. The concatenation equals the backend's decode of
// all the ids. Owned and used by one caller.
class TokenStream {
 public:
  virtual ~TokenStream() = default;
  virtual void Push(int32_t id, std::string* out) = 0;
  virtual void Finish(std::string* out) = 0;
};

// A loaded tokenizer. Implementations are immutable once built and
// thread-safe.
class TokenizerBackend {
 public:
  virtual ~TokenizerBackend() = default;
  // `text` is well-formed UTF-8. `add_special_tokens`: the backend's own
  // rule (post-processor template, or BOS/EOS).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const = 0;
  virtual std::unique_ptr<TokenStream> NewDecodeStream(bool skip_special_tokens) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
  virtual std::optional<std::string> IdToToken(int32_t id) const = 0;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_TOKENIZER_BACKEND_H_
