// A tokenizer stored as Hugging Face tokenizer.json.
#ifndef ADAPTERD_SERVER_TEXT_HF_TOKENIZER_H_
#define ADAPTERD_SERVER_TEXT_HF_TOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/added_vocabulary.h"
#include "server/text/bpe_model.h"
#include "server/text/decoder.h"
#include "server/text/normalizer.h"
#include "server/text/post_processor.h"
#include "server/text/pre_tokenizer.h"
#include "server/text/tokenizer_backend.h"

namespace adapterd::text {

// The tokenizers pipeline: added tokens, normalizer, pre-tokenizer, BPE
// model, post-processor and decoder, with tokenizers' semantics for
// `Tokenizer.encode(text, add_special_tokens)` and `Tokenizer.decode(ids,
// skip_special_tokens)`. Immutable once built and thread-safe.
class HfTokenizer : public TokenizerBackend {
 public:
  // Parses tokenizer.json text. Every unsupported or malformed part is
  // INVALID_ARGUMENT naming its JSON path.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> FromJson(std::string_view json);

  // Replaces the post-processor (as transformers' Llama tokenizer does for
  // add_bos_token / add_eos_token).
  void SetPostProcessor(std::unique_ptr<PostProcessor> p) { post_processor_ = std::move(p); }

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_special_tokens) const override;
  std::unique_ptr<TokenStream> NewDecodeStream(bool skip_special_tokens) const override;
  int64_t vocab_size() const override;
  bool IsSpecial(int32_t id) const override;
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::optional<std::string> IdToToken(int32_t id) const override;

  // The string a decoder sees for `id` (added token content first), or
  // nullptr for an unknown id.
  const std::string* TokenString(int32_t id) const;
  const Decoder& decoder() const { return *decoder_; }

 private:
  HfTokenizer() = default;
  absl::Status EncodePiece(std::string text, bool at_start, std::vector<int32_t>* ids) const;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<AddedVocabulary> added_;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_HF_TOKENIZER_H_
