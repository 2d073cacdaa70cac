// What the Split, Metaspace, Digits, Punctuation and whitespace
// pre-tokenizers and the Replace normalizer and decoder match: a regular
// expression, a literal string, or a character class; and how a string is
// cut at the matches (tokenizers' SplitDelimiterBehavior).
#ifndef ADAPTERD_SERVER_TEXT_SPLIT_PATTERN_H_
#define ADAPTERD_SERVER_TEXT_SPLIT_PATTERN_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/text/json_fields.h"
#include "server/text/regex.h"

namespace adapterd::text {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Parses the `behavior` member at `path` ("Removed", "Isolated", ...).
absl::StatusOr<SplitBehavior> SplitBehaviorField(const Json& obj, std::string_view key, const std::string& path);

// A pattern. Immutable once built and thread-safe; copies share the compiled
// regular expression.
class SplitPattern {
 public:
  using Span = Regex::Span;

  // A `{"String": ...}` or `{"Regex": ...}` pattern; errors name `path`.
  static absl::StatusOr<SplitPattern> FromJson(const JsonPattern& pattern, const std::string& path);
  static SplitPattern Literal(std::string text);
  // Every character for which `predicate` holds is a match of its own.
  static SplitPattern CharClass(bool (*predicate)(char32_t));

  // Appends the ranges of `s` kept by `behavior` (with the matches and the
  // text between them swapped when `invert`), empty ranges left out.
  absl::Status Split(std::string_view s, SplitBehavior behavior, bool invert, std::vector<Span>* out) const;
  // `s` with every match replaced by `content`.
  absl::Status ReplaceAll(std::string_view s, std::string_view content, std::string* out) const;

 private:
  // The non-overlapping matches, in order.
  absl::Status Matches(std::string_view s, std::vector<Span>* out) const;

  std::shared_ptr<const Regex> regex_;
  std::string literal_;
  bool (*predicate_)(char32_t) = nullptr;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_SPLIT_PATTERN_H_
