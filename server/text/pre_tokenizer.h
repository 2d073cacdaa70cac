// The `pre_tokenizer` of tokenizer.json: ByteLevel, Split, Metaspace,
// Digits, Whitespace, WhitespaceSplit, Punctuation, CharDelimiterSplit,
// BertPreTokenizer and Sequence.
#ifndef ADAPTERD_SERVER_TEXT_PRE_TOKENIZER_H_
#define ADAPTERD_SERVER_TEXT_PRE_TOKENIZER_H_

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/text/json_fields.h"
#include "server/text/split_pattern.h"

namespace adapterd::text {

// A piece of the input on its way to the model. `at_start`: the piece begins
// at offset 0 of the original text (Metaspace's "first" scheme prepends only
// there).
struct Piece {
  std::string text;
  bool at_start = false;
};

// GPT-2's reversible byte-to-character map: each byte as the UTF-8 of the
// visible character that stands for it in byte-level vocabularies.
const std::array<std::string, 256>& ByteLevelAlphabet();

// A chain of pre-tokenization steps (a Sequence is flattened into it). A
// PreTokenizer is immutable once built and thread-safe.
class PreTokenizer {
 public:
  // Parses the pre-tokenizer object at `path`; a JSON null splits nothing.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const Json& j, const std::string& path);

  // Splits every piece; empty pieces are dropped.
  absl::Status Apply(std::vector<Piece>* pieces) const;

 private:
  enum class Kind { kByteLevel, kSplit, kMetaspace };
  enum class Prepend { kAlways, kFirst, kNever };
  struct Step {
    Kind kind;
    std::unique_ptr<SplitPattern> pattern;  // null: ByteLevel without regex
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel
    std::string replacement;        // Metaspace
    Prepend prepend = Prepend::kAlways;
    bool split = true;
  };
  static absl::Status Parse(const Json& j, const std::string& path, std::vector<Step>* steps);
  static absl::Status ParseByteLevel(const Json& j, const std::string& path, Step* step);
  static absl::Status ParseMetaspace(const Json& j, const std::string& path, Step* step);
  static absl::Status SplitPieces(const Step& step, std::vector<Piece>* pieces);
  static absl::Status ApplyByteLevel(const Step& step, std::vector<Piece>* pieces);
  static absl::Status ApplyMetaspace(const Step& step, std::vector<Piece>* pieces);

  std::vector<Step> steps_;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_PRE_TOKENIZER_H_
