// The embedded documentation and the text the demo learns from it.
#include "server/core/demo_corpus.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace adapterd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr char kDoc[] = R"(# Title

First paragraph, line one.
line two.   

| a | b |
|---|---|
Right after a table.

```sh
# not a heading
some code

more code
```

## `Section` one

- a list item comes first
  and goes on

The answer starts here. It goes on. And on.
Still the answer.

Not the answer.

## Code only

```
x
```

### Long

This first sentence is far too long to be an answer at all. Short.
)";

TEST(DemoCorpusTest, ProseParagraphsLeaveOutCodeAndTables) {
  EXPECT_THAT(ProseParagraphs(kDoc),
              ElementsAre("# Title", "First paragraph, line one.\nline two.", "Right after a table.",
                          "## `Section` one", "- a list item comes first\n  and goes on",
                          "The answer starts here. It goes on. And on.\nStill the answer.", "Not the answer.",
                          "## Code only", "### Long",
                          "This first sentence is far too long to be an answer at all. Short."));
  EXPECT_THAT(ProseParagraphs(""), IsEmpty());
  EXPECT_THAT(ProseParagraphs("```\nopen fence, no close\n\nstill code\n"), IsEmpty());
}

TEST(DemoCorpusTest, SectionExchangesAskTheHeadingAndAnswerWithTheFirstProse) {
  std::vector<ChatPrompt> out = SectionExchanges(kDoc, 40);
  ASSERT_EQ(out.size(), 2u);
  // The title's own first paragraph, which fits.
  ASSERT_EQ(out[0].messages.size(), 2u);
  EXPECT_EQ(out[0].messages[0].role, "user");
  EXPECT_EQ(out[0].messages[0].content, "Title");
  EXPECT_EQ(out[0].messages[1].role, "assistant");
  EXPECT_EQ(out[0].messages[1].content, "First paragraph, line one. line two.");
  // Backquotes leave the title; the list item is skipped; the answer is cut
  // after the last sentence that fits in 40 bytes.
  EXPECT_EQ(out[1].messages[0].content, "Section one");
  EXPECT_EQ(out[1].messages[1].content, "The answer starts here. It goes on.");
  EXPECT_FALSE(out[1].add_generation_prompt);
  // "Code only" has no prose; "Long" has no sentence that fits.
  EXPECT_EQ(SectionExchanges(kDoc, 1000).size(), 3u);
}

TEST(DemoCorpusTest, TheDocumentationIsEmbeddedWithoutTheBenchmarkReport) {
  std::vector<std::string> paths;
  for (const DemoDocument& d : DemoDocuments()) {
    paths.emplace_back(d.path);
    EXPECT_FALSE(d.text.empty()) << d.path;
  }
  ASSERT_GE(paths.size(), 3u);
  EXPECT_EQ(paths.front(), "README.md");
  EXPECT_EQ(paths.back(), "SECURITY.md");
  EXPECT_THAT(paths, ::testing::Contains("docs/chat_templates.md"));
  EXPECT_THAT(paths, ::testing::Not(::testing::Contains("docs/benchmarks.md")));
  ASSERT_NE(FindDemoDocument("SECURITY.md"), nullptr);
  EXPECT_EQ(FindDemoDocument("docs/benchmarks.md"), nullptr);
  EXPECT_TRUE(FindDemoDocument("README.md")->text.starts_with("# adapterd"));
}

}  // namespace
}  // namespace adapterd::core
