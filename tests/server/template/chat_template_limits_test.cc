// The limits that keep hostile templates from exhausting memory, time or
// stack: each is an INVALID_ARGUMENT that names the limit, reached quickly
// and without building the oversized value first.
#include <string>

#include "absl/status/statusor.h"

#include "gtest/gtest.h"
#include "server/template/chat_template.h"
#include "tests/server/template/template_test_util.h"
#include "tests/support/status_assertions.h"

namespace adapterd::tmpl {
namespace {

using ::adapterd::testing::IsError;
using testing::RenderText;

constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;

TemplateLimits Small() {
  TemplateLimits l;
  l.max_output_bytes = 1000;
  l.max_loop_iterations = 10000;
  l.max_value_nodes = 10000;
  l.max_work = 1'000'000;
  return l;
}

TEST(ChatTemplateLimitsTest, OutputSize) {
  EXPECT_TRUE(IsError(RenderText("{% for i in range(100) %}{{ 'x' * 20 }}{% endfor %}", "{}", Small()).status(),
                      kInvalid, {"line 1", "the rendered output exceeds the limit of 1000 bytes"}));
  EXPECT_TRUE(IsError(RenderText("{% set s = 'x' * 2000 %}", "{}", Small()).status(), kInvalid,
                      {"exceeds the output limit of 1000 bytes"}));
  // Default limits: a string of terabytes is refused before it is built.
  EXPECT_TRUE(IsError(RenderText("{{ 'ab' * 10000000000000 }}").status(), kInvalid, {"output limit"}));
  EXPECT_TRUE(IsError(RenderText("{{ ('a' * 1000)|replace('a', 'a' * 1000) }}", "{}", Small()).status(), kInvalid,
                      {"output limit"}));
  EXPECT_TRUE(IsError(RenderText("{{ ['x' * 900, 'y' * 900]|join }}", "{}", Small()).status(), kInvalid,
                      {"output limit"}));
  EXPECT_TRUE(IsError(RenderText("{{ [1, 2]|tojson(indent=600) }}", "{}", Small()).status(), kInvalid,
                      {"output limit"}));
  EXPECT_TRUE(IsError(RenderText("{% set ns = namespace(s='x') %}{% for i in range(20) %}"
                                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "{}", Small()).status(),
                      kInvalid, {"output limit"}));
}

TEST(ChatTemplateLimitsTest, SourceSizeAndLongLines) {
  TemplateLimits limits;
  limits.max_source_bytes = 100;
  EXPECT_TRUE(IsError(ChatTemplate::Parse(std::string(101, 'x'), limits).status(), kInvalid,
                      {"chat template of 101 bytes exceeds the limit of 100 bytes"}));
  // One long line of many tokens parses in linear time (columns are counted
  // incrementally).
  std::string line;
  for (int i = 0; i < 200000; ++i) line += "{{ 1 }}";
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(line);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> out = t->Render(nlohmann::ordered_json::object());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->size(), 200000u);
  EXPECT_TRUE(IsError(ChatTemplate::Parse(line + " {{ x|wordwrap }}").status(), kInvalid,
                      {"line 1, column 1400007: filter \"wordwrap\""}));
}

TEST(ChatTemplateLimitsTest, LoopIterations) {
  EXPECT_TRUE(IsError(RenderText("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
                                 "{}", Small()).status(),
                      kInvalid, {"loops exceed the limit of 10000 iterations"}));
}

TEST(ChatTemplateLimitsTest, Recursion) {
  EXPECT_TRUE(IsError(RenderText("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}").status(), kInvalid,
                      {"evaluation nested more than 256 levels deep"}));
}

TEST(ChatTemplateLimitsTest, ValueSizeAndDepth) {
  EXPECT_TRUE(IsError(RenderText("{% set ns = namespace(l=[]) %}{% for i in range(200) %}"
                                 "{% set ns.l = [ns.l] %}{% endfor %}").status(),
                      kInvalid, {"nested more than 128 levels deep"}));
  // Shared halves count every time, as printing or comparing visits them.
  EXPECT_TRUE(IsError(RenderText("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}"
                                 "{% set ns.l = [ns.l, ns.l] %}{% endfor %}").status(),
                      kInvalid, {"more than 1000000 elements"}));
  EXPECT_TRUE(IsError(RenderText("{{ [0] * 20000 }}", "{}", Small()).status(), kInvalid,
                      {"exceeds the limit of 10000 elements"}));
  EXPECT_TRUE(IsError(RenderText("{{ ('a,' * 400).split(',')|length }}", "{}", [] {
                        TemplateLimits l = Small();
                        l.max_value_nodes = 100;
                        return l;
                      }()).status(),
                      kInvalid, {"elements"}));
}

TEST(ChatTemplateLimitsTest, ChainsThroughMethodsLoopsAndNamespacesAreBounded) {
  EXPECT_TRUE(IsError(RenderText("{% set ns = namespace(l=[]) %}{% for i in range(300) %}"
                                 "{% set ns.l = [ns.l.count] %}{% endfor %}").status(),
                      kInvalid, {"nested more than 128 levels deep"}));
  EXPECT_TRUE(IsError(RenderText("{% set ns = namespace(l={}) %}{% for i in range(300) %}"
                                 "{% set ns.l = {'a': ns.l}.items() %}{% endfor %}").status(),
                      kInvalid, {"nested more than 128 levels deep"}));
  EXPECT_TRUE(IsError(RenderText("{% set ns = namespace(x=0) %}{% for i in range(300) %}{% for y in [ns.x, 0] %}"
                                 "{% if loop.last %}{% set ns.x = loop %}{% endif %}{% endfor %}{% endfor %}").status(),
                      kInvalid, {"nested more than 128 levels deep"}));
  // Namespaces may chain without bound; printing stops at a fixed depth.
  absl::StatusOr<std::string> out = RenderText(
      "{% set root = namespace(cur=none) %}{% for i in range(5000) %}"
      "{% set root.cur = namespace(x=root.cur) %}{% endfor %}{{ root }}");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NE(out->find("<Namespace {'x': ...}>"), std::string::npos);
}

TEST(ChatTemplateLimitsTest, Work) {
  EXPECT_TRUE(IsError(RenderText("{% set s = 'x' * 400 %}{% for i in range(5000) %}{% set t = s ~ s %}{% endfor %}",
                                 "{}", Small()).status(),
                      kInvalid, {"work limit of 1000000"}));
}

TEST(ChatTemplateLimitsTest, NamespaceCyclesPrintWithoutRecursing) {
  absl::StatusOr<std::string> out =
      RenderText("{% set ns = namespace() %}{% set ns.x = ns %}{% set ns.l = [ns] %}{{ ns }}");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<Namespace {'x': <Namespace {...}>, 'l': [<Namespace {...}>]}>");
}

TEST(ChatTemplateLimitsTest, TemplateStaysUsableAfterAnError) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ 10 // n }}", Small());
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->Render({{"n", 0}}).ok());
  absl::StatusOr<std::string> out = t->Render({{"n", 3}});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "3");
}

}  // namespace
}  // namespace adapterd::tmpl
