// RenderChat: the variables transformers' apply_chat_template gives a
// template, validation of the conversation, a template's refusal of a role,
// and concurrent renders of one parsed template.
#include <cctype>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/template/chat_template.h"
#include "tests/support/status_assertions.h"

namespace adapterd::tmpl {
namespace {

using ::adapterd::testing::IsError;
using json = nlohmann::ordered_json;

constexpr char kChatMl[] =
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

constexpr char kStrictRoles[] =
    "{{ bos_token }}{% for m in messages %}"
    "{% if m.role not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown message role: ' + m.role) }}{% endif %}"
    "[{{ m.role }}]{{ m.content }}{% endfor %}{{ eos_token if not add_generation_prompt }}";

json Conversation() {
  return json::array({{{"role", "system"}, {"content", "Be brief."}},
                      {{"role", "user"}, {"content", "Hi ✓"}}});
}

TEST(RenderChatTest, RendersTheConversation) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(kChatMl);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> out = RenderChat(*t, Conversation(), true, "<s>", "</s>");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi ✓<|im_end|>\n"
            "<|im_start|>assistant\n");
  out = RenderChat(*t, Conversation(), false, "<s>", "</s>");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->find("<|im_start|>assistant"), std::string::npos);
}

TEST(RenderChatTest, VariablesMatchApplyChatTemplate) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(
      "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools is defined }}|{{ tools is none }}|"
      "{{ documents is none }}|{{ messages|length }}|{{ tools|tojson if tools else '' }}");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> out = RenderChat(*t, Conversation(), false, "<s>", "</s>");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s>|</s>|False|True|True|True|2|");
  // Tools keep their key order, as Python dicts do.
  const json tools = json::array(
      {{{"type", "function"}, {"function", {{"name", "f"}, {"description", "d"}, {"parameters", json::object()}}}}});
  out = RenderChat(*t, Conversation(), true, "", "", &tools);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "||True|True|False|True|2|"
            "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": \"d\", \"parameters\": {}}}]");
}

TEST(RenderChatTest, TemplateRefusalOfARoleComesBackVerbatim) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(kStrictRoles);
  ASSERT_TRUE(t.ok()) << t.status();
  json messages = Conversation();
  messages.push_back({{"role", "wizard"}, {"content", "x"}});
  absl::Status s = RenderChat(*t, messages, false, "<s>", "</s>").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "Unknown message role: wizard");
  absl::StatusOr<std::string> ok = RenderChat(*t, Conversation(), false, "<s>", "</s>");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "<s>[system]Be brief.[user]Hi ✓</s>");
}

TEST(RenderChatTest, RejectsMalformedConversations) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(kChatMl);
  ASSERT_TRUE(t.ok());
  const auto code = absl::StatusCode::kInvalidArgument;
  EXPECT_TRUE(IsError(RenderChat(*t, json::object(), false, "", "").status(), code, {"messages must be a JSON array"}));
  EXPECT_TRUE(IsError(RenderChat(*t, json::array({"hi"}), false, "", "").status(), code, {"messages[0] is not an object"}));
  EXPECT_TRUE(IsError(RenderChat(*t, json::array({{{"role", "user"}}, {{"content", "x"}}}), false, "", "").status(),
                      code, {"messages[1] has no string \"role\""}));
  EXPECT_TRUE(IsError(RenderChat(*t, json::array({{{"role", 3}}}), false, "", "").status(), code,
                      {"messages[0] has no string \"role\""}));
  const json tools = json::object();
  EXPECT_TRUE(IsError(RenderChat(*t, Conversation(), false, "", "", &tools).status(), code,
                      {"tools must be a JSON array"}));
  // A template that adds a missing field to a string fails as jinja2 does.
  EXPECT_TRUE(IsError(RenderChat(*t, json::array({{{"role", "user"}}}), false, "", "").status(), code,
                      {"chat template line 1: 'dict object' has no attribute 'content'"}));
}

TEST(RenderChatTest, AcceptsSortedJsonToo) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse("{{ messages[0]|tojson }}");
  ASSERT_TRUE(t.ok());
  nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", "x"}}});
  absl::StatusOr<std::string> out = RenderChat(*t, messages, false, "", "");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "{\"content\": \"x\", \"role\": \"user\"}");  // nlohmann::json sorts keys
}

TEST(RenderChatTest, StrftimeNowFormatsTheCurrentTime) {
  // Only the shape of the date is checked, so the test holds on any day.
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(
      "{% if strftime_now is defined %}{{ strftime_now('%Y') }}|{{ strftime_now('') }}|"
      "{{ strftime_now('%d %b %Y')|length }}{% endif %}");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> out = RenderChat(*t, Conversation(), false, "", "");
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 8u) << *out;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(std::isdigit(static_cast<unsigned char>((*out)[i]))) << *out;
  EXPECT_EQ(out->substr(4), "||11");
}

TEST(RenderChatTest, ConcurrentRendersOfOneTemplate) {
  absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + m.content|length %}"
      "{{ loop.index }}:{{ m.content|upper }};{% endfor %}{{ ns.n }}");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const ChatTemplate copy = *parsed;  // copies share the parsed tree
  constexpr int kThreads = 8, kRenders = 200;
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRenders; ++i) {
        const std::string word = absl::StrCat("w", t, "_", i);
        json messages = json::array({{{"role", "user"}, {"content", word}}, {{"role", "assistant"}, {"content", "ok"}}});
        absl::StatusOr<std::string> out = RenderChat(t % 2 ? copy : *parsed, messages, false, "", "");
        std::string upper = word;
        upper[0] = 'W';
        const std::string want = absl::StrCat("1:", upper, ";2:OK;", word.size() + 2);
        if (!out.ok() || *out != want) {
          failures[t] = out.ok() ? *out : std::string(out.status().message());
          return;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], "") << "thread " << t;
}

}  // namespace
}  // namespace adapterd::tmpl
