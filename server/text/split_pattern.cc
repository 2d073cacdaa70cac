#include "server/text/split_pattern.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/text/unicode_util.h"

namespace adapterd::text {
namespace {

struct Segment {
  size_t begin, end;
  bool is_match;
};

// The whole of `s` as alternating unmatched and matched segments.
std::vector<Segment> Segments(std::string_view s, const std::vector<Regex::Span>& matches, bool invert) {
  std::vector<Segment> out;
  if (s.empty()) {
    out.push_back({0, 0, invert});
    return out;
  }
  out.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev != b) out.push_back({prev, b, invert});
    out.push_back({b, e, !invert});
    prev = e;
  }
  if (prev != s.size()) out.push_back({prev, s.size(), invert});
  return out;
}

}  // namespace

absl::StatusOr<SplitBehavior> SplitBehaviorField(const Json& obj, std::string_view key, const std::string& path) {
  absl::StatusOr<std::string> v = RequiredString(obj, key, path);
  if (!v.ok()) return v.status();
  if (*v == "Removed") return SplitBehavior::kRemoved;
  if (*v == "Isolated") return SplitBehavior::kIsolated;
  if (*v == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (*v == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (*v == "Contiguous") return SplitBehavior::kContiguous;
  return JsonError(JsonChild(path, key), absl::StrCat("\"", *v, "\" is not a split behavior"));
}

absl::StatusOr<SplitPattern> SplitPattern::FromJson(const JsonPattern& pattern, const std::string& path) {
  if (!pattern.is_regex) return Literal(pattern.text);
  absl::StatusOr<std::unique_ptr<Regex>> re = Regex::Compile(pattern.text);
  if (!re.ok()) return JsonError(JsonChild(path, "Regex"), std::string(re.status().message()));
  SplitPattern p;
  p.regex_ = std::move(*re);
  return p;
}

SplitPattern SplitPattern::Literal(std::string text) {
  SplitPattern p;
  p.literal_ = std::move(text);
  return p;
}

SplitPattern SplitPattern::CharClass(bool (*predicate)(char32_t)) {
  SplitPattern p;
  p.predicate_ = predicate;
  return p;
}

absl::Status SplitPattern::Matches(std::string_view s, std::vector<Span>* out) const {
  if (regex_ != nullptr) return regex_->FindAll(s, out);
  if (predicate_ != nullptr) {
    size_t pos = 0;
    while (pos < s.size()) {
      const size_t start = pos;
      const char32_t cp = NextCodePoint(s, &pos);
      if (predicate_(cp)) out->emplace_back(start, pos);
    }
    return absl::OkStatus();
  }
  if (literal_.empty()) return absl::OkStatus();
  for (size_t pos = s.find(literal_); pos != std::string_view::npos; pos = s.find(literal_, pos)) {
    out->emplace_back(pos, pos + literal_.size());
    pos += literal_.size();
  }
  return absl::OkStatus();
}

absl::Status SplitPattern::Split(std::string_view s, SplitBehavior behavior, bool invert,
                                 std::vector<Span>* out) const {
  std::vector<Span> matches;
  if (absl::Status st = Matches(s, &matches); !st.ok()) return st;
  const std::vector<Segment> segs = Segments(s, matches, invert);
  std::vector<Segment> kept;  // is_match now means "remove"
  kept.reserve(segs.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Segment& g : segs) kept.push_back({g.begin, g.end, false});
      break;
    case SplitBehavior::kRemoved:
      kept = segs;
      break;
    case SplitBehavior::kContiguous:
      for (const Segment& g : segs) {
        if (g.is_match == previous_match && !kept.empty()) {
          kept.back().end = g.end;
        } else {
          kept.push_back({g.begin, g.end, false});
        }
        previous_match = g.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Segment& g : segs) {
        if (g.is_match && !previous_match && !kept.empty()) {
          kept.back().end = g.end;
        } else {
          kept.push_back({g.begin, g.end, false});
        }
        previous_match = g.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().begin = it->begin;
        } else {
          kept.push_back({it->begin, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  for (const Segment& g : kept) {
    if (!g.is_match && g.end > g.begin) out->emplace_back(g.begin, g.end);
  }
  return absl::OkStatus();
}

absl::Status SplitPattern::ReplaceAll(std::string_view s, std::string_view content, std::string* out) const {
  std::vector<Span> matches;
  if (absl::Status st = Matches(s, &matches); !st.ok()) return st;
  out->clear();
  out->reserve(s.size());
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    out->append(s.substr(prev, b - prev));
    out->append(content);
    prev = e;
  }
  out->append(s.substr(prev));
  return absl::OkStatus();
}

}  // namespace adapterd::text
