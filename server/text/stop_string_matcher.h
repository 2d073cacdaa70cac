// Stop strings over streamed text.
#ifndef ADAPTERD_SERVER_TEXT_STOP_STRING_MATCHER_H_
#define ADAPTERD_SERVER_TEXT_STOP_STRING_MATCHER_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace adapterd::text {

// Watches the text deltas of one request for stop strings. Feed returns the
// text that is safe to emit: everything except a tail that could still be
// the start of a stop string. The first stop string to complete ends the
// match (of two that complete at the same byte, the longer); the result
// then holds the text before it, plus the stop string itself when
// `include_stop_string`, and the index of the stop string. After a match,
// Feed and Flush return nothing. Flush returns the held tail when the
// request ends without a match.
//
// A StopStringMatcher belongs to one request and is not thread-safe.
class StopStringMatcher {
 public:
  struct Limits {
    size_t max_stop_strings = 16;
    size_t max_stop_string_bytes = 256;
  };
  struct Result {
    std::string text;
    std::optional<size_t> matched;  // index into the stop strings
  };

  // INVALID_ARGUMENT naming the limit when there are more stop strings than
  // `limits.max_stop_strings` or one is longer than
  // `limits.max_stop_string_bytes`, and for an empty or non-UTF-8 string.
  static absl::StatusOr<std::unique_ptr<StopStringMatcher>> Create(std::vector<std::string> stop_strings,
                                                                   Limits limits, bool include_stop_string = false);

  Result Feed(std::string_view delta);
  std::string Flush();
  bool matched() const { return done_; }

 private:
  StopStringMatcher(std::vector<std::string> stops, bool include) : stops_(std::move(stops)), include_(include) {}
  // The length of the longest suffix of held_ that is a proper prefix of a
  // stop string.
  size_t HeldSuffix() const;

  std::vector<std::string> stops_;
  bool include_;
  std::string held_;
  bool done_ = false;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_STOP_STRING_MATCHER_H_
