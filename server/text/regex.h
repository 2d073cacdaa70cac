// Regular expressions for the tokenizer pipeline, through PCRE2.
//
// The Hugging Face `tokenizers` library matches its pre-tokenizer and
// normalizer patterns with Oniguruma. PCRE2 (Debian's libpcre2-8) accepts the
// same syntax that those patterns use: Unicode properties (\p{L}, \p{N}),
// scoped flags ((?i:...)) and lookahead ((?!\S)). RE2 has no lookahead and
// std::regex no Unicode properties, so neither can run the Llama 3, Qwen2 or
// GPT-2 patterns. Patterns are compiled with UTF and UCP (so \s, \w and \d are
// Unicode-aware, as in Oniguruma) and JIT-compiled when PCRE2 supports it.
#ifndef ADAPTERD_SERVER_TEXT_REGEX_H_
#define ADAPTERD_SERVER_TEXT_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace adapterd::text {

// A compiled pattern. A Regex is immutable once compiled and thread-safe:
// each thread matches with its own match data and JIT stack.
class Regex {
 public:
  using Span = std::pair<size_t, size_t>;  // [begin, end) in bytes

  // INVALID_ARGUMENT with PCRE2's message and the offset in the pattern when
  // `pattern` does not compile.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the successive non-overlapping matches in well-formed UTF-8 `s`.
  // An empty match is recorded and the search resumes one character later.
  // INTERNAL when PCRE2 gives up (its match or stack limits).
  absl::Status FindAll(std::string_view s, std::vector<Span>* out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex(void* code, std::string pattern) : code_(code), pattern_(std::move(pattern)) {}
  void* code_;  // pcre2_code_8
  std::string pattern_;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_REGEX_H_
