// transformers' `clean_up_tokenization` (" ." -> ".", " n't" -> "n't", ...)
// as a stream.
#ifndef ADAPTERD_SERVER_TEXT_SPACE_CLEANUP_H_
#define ADAPTERD_SERVER_TEXT_SPACE_CLEANUP_H_

#include <string>
#include <string_view>

namespace adapterd::text {

// Applies the replacements to text that arrives in pieces, holding back only
// a tail that could begin one of the patterns, so that the concatenated
// output equals the replacements applied to the whole text. One per caller.
class SpaceCleanup {
 public:
  // Appends to `out` the cleaned text that `text` makes final.
  void Push(std::string_view text, std::string* out);
  // Appends the rest.
  void Finish(std::string* out);

  // The replacements applied to a whole text.
  static std::string Apply(std::string_view text);

 private:
  std::string pending_;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_SPACE_CLEANUP_H_
