#include "server/text/stop_string_matcher.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/status_assertions.h"

namespace adapterd::text {
namespace {

using adapterd::testing::IsError;

std::unique_ptr<StopStringMatcher> Make(std::vector<std::string> stops, bool include = false) {
  absl::StatusOr<std::unique_ptr<StopStringMatcher>> m = StopStringMatcher::Create(std::move(stops), {}, include);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

// Feeds `deltas`; returns everything emitted and the match, if any.
std::pair<std::string, std::optional<size_t>> Feed(StopStringMatcher& m, const std::vector<std::string>& deltas) {
  std::string out;
  for (const std::string& d : deltas) {
    StopStringMatcher::Result r = m.Feed(d);
    out += r.text;
    if (r.matched) return {out, r.matched};
  }
  return {out + m.Flush(), std::nullopt};
}

TEST(StopStringMatcherTest, MatchSplitAcrossDeltas) {
  auto m = Make({"STOP"});
  StopStringMatcher::Result r = m->Feed("hello ST");
  EXPECT_EQ(r.text, "hello ");  // "ST" may begin the stop string
  EXPECT_FALSE(r.matched);
  r = m->Feed("O");
  EXPECT_EQ(r.text, "");
  r = m->Feed("P and more");
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.matched, 0u);
  EXPECT_TRUE(m->matched());
  EXPECT_EQ(m->Feed("x").text, "");
  EXPECT_EQ(m->Flush(), "");
}

TEST(StopStringMatcherTest, IncludeStopString) {
  auto m = Make({"</a>"}, /*include=*/true);
  auto [text, matched] = Feed(*m, {"x</", "a>y"});
  EXPECT_EQ(text, "x</a>");
  EXPECT_EQ(matched, 0u);
}

TEST(StopStringMatcherTest, PrefixOfAnotherStopsAtTheFirstToComplete) {
  auto m = Make({"abc", "ab"});
  auto [text, matched] = Feed(*m, {"xa", "bc"});
  EXPECT_EQ(text, "x");
  EXPECT_EQ(matched, 1u);  // "ab" completes first
  auto longer = Make({"ab", "xab"});
  auto [t2, m2] = Feed(*longer, {"zxa", "b"});
  EXPECT_EQ(t2, "z");
  EXPECT_EQ(m2, 1u);  // both end at the same byte: the longer wins
}

TEST(StopStringMatcherTest, NeverMatchingReleasesEverything) {
  auto m = Make({"nevermore"});
  auto [text, matched] = Feed(*m, {"a nev", "er", "mind", " the nev"});
  EXPECT_FALSE(matched);
  EXPECT_EQ(text, "a nevermind the nev");
}

TEST(StopStringMatcherTest, HoldbackIsOnlyAPossibleStart) {
  auto m = Make({"abcd"});
  EXPECT_EQ(m->Feed("xxab").text, "xx");
  EXPECT_EQ(m->Feed("x").text, "abx");  // "abx" can no longer start it
  EXPECT_EQ(m->Feed("abc").text, "");
  EXPECT_EQ(m->Feed("e").text, "abce");
  EXPECT_EQ(m->Flush(), "");
}

TEST(StopStringMatcherTest, MultibyteStopStrings) {
  auto m = Make({"\xE2\x80\x94\xE2\x80\x94"});  // two em dashes
  auto [text, matched] = Feed(*m, {"a\xE2\x80\x94", "b\xE2\x80\x94", "\xE2\x80\x94" "c"});
  EXPECT_EQ(text, "a\xE2\x80\x94" "b");
  EXPECT_EQ(matched, 0u);
}

TEST(StopStringMatcherTest, NoStopStringsPassesThrough) {
  auto m = Make({});
  EXPECT_EQ(m->Feed("abc").text, "abc");
  EXPECT_EQ(m->Flush(), "");
}

TEST(StopStringMatcherTest, LimitsAreEnforced) {
  StopStringMatcher::Limits limits{.max_stop_strings = 2, .max_stop_string_bytes = 4};
  EXPECT_TRUE(IsError(StopStringMatcher::Create({"a", "b", "c"}, limits).status(), absl::StatusCode::kInvalidArgument,
                      {"3 stop strings", "limit is 2", "max_stop_strings"}));
  EXPECT_TRUE(IsError(StopStringMatcher::Create({"a", "abcde"}, limits).status(), absl::StatusCode::kInvalidArgument,
                      {"stop[1]", "5 bytes", "limit is 4", "max_stop_string_bytes"}));
  EXPECT_TRUE(IsError(StopStringMatcher::Create({""}, limits).status(), absl::StatusCode::kInvalidArgument,
                      {"stop[0] is empty"}));
  EXPECT_TRUE(IsError(StopStringMatcher::Create({"\xFF"}, limits).status(), absl::StatusCode::kInvalidArgument,
                      {"stop[0]", "UTF-8"}));
  EXPECT_TRUE(StopStringMatcher::Create({"ab", "abcd"}, limits).ok());
}

}  // namespace
}  // namespace adapterd::text
