#include "server/text/space_cleanup.h"

#include <array>
#include <utility>

namespace adapterd::text {
namespace {

// In transformers' order; each is applied to the result of the previous.
constexpr std::array<std::pair<std::string_view, std::string_view>, 10> kReplacements = {{
    {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
    {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
}};

bool IsProperPrefixOfPattern(std::string_view s) {
  for (const auto& [pattern, unused] : kReplacements) {
    if (s.size() < pattern.size() && pattern.substr(0, s.size()) == s) return true;
  }
  return false;
}

// The largest cut such that no pattern could start before it and end after.
size_t SafeCut(std::string_view s) {
  size_t cut = s.size();
  for (bool moved = true; moved;) {
    moved = false;
    for (size_t len = 3; len >= 1; --len) {
      if (cut >= len && IsProperPrefixOfPattern(s.substr(cut - len, len))) {
        cut -= len;
        moved = true;
        break;
      }
    }
  }
  return cut;
}

}  // namespace

std::string SpaceCleanup::Apply(std::string_view text) {
  std::string s(text);
  std::string next;
  for (const auto& [from, to] : kReplacements) {
    if (s.find(from) == std::string::npos) continue;
    next.clear();
    size_t prev = 0;
    for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, prev)) {
      next.append(s, prev, pos - prev);
      next.append(to);
      prev = pos + from.size();
    }
    next.append(s, prev, std::string::npos);
    s.swap(next);
  }
  return s;
}

void SpaceCleanup::Push(std::string_view text, std::string* out) {
  pending_.append(text);
  const size_t cut = SafeCut(pending_);
  if (cut == 0) return;
  out->append(Apply(std::string_view(pending_).substr(0, cut)));
  pending_.erase(0, cut);
}

void SpaceCleanup::Finish(std::string* out) {
  out->append(Apply(pending_));
  pending_.clear();
}

}  // namespace adapterd::text
