// The `added_tokens` of tokenizer.json and how they cut the input.
#ifndef ADAPTERD_SERVER_TEXT_ADDED_VOCABULARY_H_
#define ADAPTERD_SERVER_TEXT_ADDED_VOCABULARY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "server/text/json_fields.h"
#include "server/text/normalizer.h"

namespace adapterd::text {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// The added tokens, matched in the input before anything else: first the
// tokens with `normalized: false` in the original text, then the others in
// each normalized piece, leftmost-longest and without overlap, with
// `single_word`, `lstrip` and `rstrip` as tokenizers applies them. An
// AddedVocabulary is immutable once built and thread-safe.
class AddedVocabulary {
 public:
  // A cut of the input: [begin, end) is added token `id`, or text when id < 0.
  struct Segment {
    size_t begin, end;
    int32_t id;
  };

  // Parses the `added_tokens` array at `path` (null or absent: none). The
  // normalized tokens are matched in their normalized form.
  static absl::StatusOr<std::unique_ptr<AddedVocabulary>> FromJson(const Json* j, const std::string& path,
                                                                    const Normalizer& normalizer);
  ~AddedVocabulary();

  // Cuts `text` at the non-normalized (or, with `normalized`, the normalized)
  // tokens. Covers the whole of `text`, text segments included.
  void Split(std::string_view text, bool normalized, std::vector<Segment>* out) const;

  const AddedToken* ById(int32_t id) const;
  std::optional<int32_t> IdOf(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  class Trie;
  AddedVocabulary();
  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> by_id_;
  absl::flat_hash_map<std::string, int32_t> by_content_;
  std::unique_ptr<Trie> raw_trie_, normalized_trie_;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_ADDED_VOCABULARY_H_
