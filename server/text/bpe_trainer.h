// Trains a byte-level BPE tokenizer (GPT-2 / Llama 3 style) from text and
// writes it as Hugging Face tokenizer.json.
#ifndef ADAPTERD_SERVER_TEXT_BPE_TRAINER_H_
#define ADAPTERD_SERVER_TEXT_BPE_TRAINER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/text/pre_tokenizer.h"

namespace adapterd::text {

struct BpeTrainerOptions {
  // Every id of the result, special tokens and the 256 byte tokens included.
  int64_t vocab_size = 2048;
  // Ids 0, 1, ... in this order; added tokens of the tokenizer, special.
  // Occurrences in the training text are cut out before pre-tokenization,
  // as encoding would.
  std::vector<std::string> special_tokens;
  // The Split pre-tokenizer's regular expression (PCRE2 / Oniguruma syntax,
  // "Isolated" behaviour), applied before the ByteLevel mapping.
  std::string split_pattern;
  // Prepended by the post-processor when special tokens are added; one of
  // `special_tokens`, or empty for none.
  std::string bos_token;
};

// The learned vocabulary, as raw bytes: `tokens[id]` for every id (special
// tokens as their text), and the merges in rank order, each a pair of
// tokens whose concatenation is also a token.
struct BpeVocabulary {
  std::vector<std::string> tokens;
  std::vector<std::pair<std::string, std::string>> merges;
};

// A BpeTrainer learns byte-level BPE merges the way Hugging Face's
// BpeTrainer does: the text is cut at special tokens and pre-tokenized by
// the Split pattern; words start as byte sequences (ids after the special
// tokens, in byte order); and the most frequent adjacent pair over all
// words is merged, again and again, until the vocabulary is full. Ties go
// to the pair with the smaller ids, so the result depends only on the text
// fed, in the order fed, and the options.
//
// Feed() as often as needed, then Train(). Not thread-safe; Train() may be
// called more than once.
class BpeTrainer {
 public:
  // INVALID_ARGUMENT naming the option: a pattern that does not compile, a
  // vocabulary too small for the special and byte tokens, duplicate or empty
  // special tokens, a bos_token that is not one of them.
  static absl::StatusOr<std::unique_ptr<BpeTrainer>> Create(BpeTrainerOptions options);

  // Counts the words of `text`. INVALID_ARGUMENT (with the byte offset) when
  // it is not UTF-8.
  absl::Status Feed(std::string_view text);

  // FAILED_PRECONDITION when the text fed has too few distinct pairs to
  // fill the vocabulary.
  absl::StatusOr<BpeVocabulary> Train() const;

  // tokenizer.json for `vocab`: the special tokens as added tokens, the
  // Split + ByteLevel pre-tokenizer, a BOS template post-processor (when
  // bos_token is set) and the ByteLevel decoder, in the layout tokenizers
  // (0.22) saves. Deterministic: the same vocabulary gives the same bytes.
  std::string TokenizerJson(const BpeVocabulary& vocab) const;

  const BpeTrainerOptions& options() const { return options_; }

 private:
  explicit BpeTrainer(BpeTrainerOptions options) : options_(std::move(options)) {}

  BpeTrainerOptions options_;
  std::unique_ptr<PreTokenizer> split_;
  absl::flat_hash_map<std::string, int64_t> word_counts_;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_BPE_TRAINER_H_
