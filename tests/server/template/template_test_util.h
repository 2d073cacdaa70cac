// Helpers shared by the chat template tests: a table row of template,
// context and expected output, and parse-and-render shortcuts. The expected
// outputs in the tables are what jinja2 3.1.6, configured as transformers
// configures it, renders for the same template and context.
#ifndef ADAPTERD_TESTS_SERVER_TEMPLATE_TEMPLATE_TEST_UTIL_H_
#define ADAPTERD_TESTS_SERVER_TEMPLATE_TEMPLATE_TEST_UTIL_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/template/chat_template.h"

namespace adapterd::tmpl::testing {

struct RenderCase {
  const char* name;
  const char* source;
  const char* context;  // JSON object text
  const char* expected;
};

inline absl::StatusOr<std::string> RenderText(std::string_view source, std::string_view context = "{}",
                                              const TemplateLimits& limits = {}) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(source, limits);
  if (!t.ok()) return t.status();
  return t->Render(nlohmann::ordered_json::parse(context));
}

inline void ExpectRenders(const RenderCase& c) {
  SCOPED_TRACE(c.name);
  absl::StatusOr<std::string> out = RenderText(c.source, c.context);
  ASSERT_TRUE(out.ok()) << c.name << ": " << out.status();
  EXPECT_EQ(*out, c.expected) << c.name;
}

}  // namespace adapterd::tmpl::testing

#endif  // ADAPTERD_TESTS_SERVER_TEMPLATE_TEMPLATE_TEST_UTIL_H_
