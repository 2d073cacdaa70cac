#include "server/text/stop_string_matcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/text/unicode_util.h"

namespace adapterd::text {

absl::StatusOr<std::unique_ptr<StopStringMatcher>> StopStringMatcher::Create(std::vector<std::string> stops,
                                                                             Limits limits, bool include) {
  if (stops.size() > limits.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrCat("stop: ", stops.size(), " stop strings given; the limit is ",
                                                   limits.max_stop_strings, " (max_stop_strings)"));
  }
  for (size_t i = 0; i < stops.size(); ++i) {
    if (stops[i].empty()) return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is empty"));
    if (stops[i].size() > limits.max_stop_string_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is ", stops[i].size(), " bytes; the limit is ",
                                                     limits.max_stop_string_bytes, " (max_stop_string_bytes)"));
    }
    if (std::optional<size_t> bad = FindInvalidUtf8(stops[i])) {
      return absl::InvalidArgumentError(absl::StrCat("stop[", i, "] is not valid UTF-8 at byte offset ", *bad));
    }
  }
  return std::unique_ptr<StopStringMatcher>(new StopStringMatcher(std::move(stops), include));
}

size_t StopStringMatcher::HeldSuffix() const {
  size_t best = 0;
  for (const std::string& s : stops_) {
    for (size_t k = std::min(s.size() - 1, held_.size()); k > best; --k) {
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        best = k;
        break;
      }
    }
  }
  return best;
}

StopStringMatcher::Result StopStringMatcher::Feed(std::string_view delta) {
  Result r;
  if (done_) return r;
  const size_t old = held_.size();  // no stop string lies wholly inside the held tail
  held_.append(delta);
  size_t best_end = std::string::npos, best_begin = 0;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const std::string& s = stops_[i];
    const size_t from = old >= s.size() - 1 ? old - (s.size() - 1) : 0;
    const size_t pos = held_.find(s, from);
    if (pos == std::string::npos) continue;
    const size_t end = pos + s.size();
    if (end < best_end || (end == best_end && pos < best_begin)) {
      best_end = end;
      best_begin = pos;
      r.matched = i;
    }
  }
  if (r.matched.has_value()) {
    r.text = held_.substr(0, include_ ? best_end : best_begin);
    held_.clear();
    done_ = true;
    return r;
  }
  const size_t keep = HeldSuffix();
  r.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return r;
}

std::string StopStringMatcher::Flush() {
  if (done_) return std::string();
  done_ = true;
  return std::exchange(held_, std::string());
}

}  // namespace adapterd::text
