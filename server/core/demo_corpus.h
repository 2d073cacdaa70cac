// The project's documentation, embedded in the binary at build time, and
// the text the demo model learns from it.
#ifndef ADAPTERD_SERVER_CORE_DEMO_CORPUS_H_
#define ADAPTERD_SERVER_CORE_DEMO_CORPUS_H_

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "server/core/generate_request.h"

namespace adapterd::core {

struct DemoDocument {
  std::string_view path;  // relative to the source tree, e.g. "docs/architecture.md"
  std::string_view text;  // the file's bytes as built
};

// README.md, every docs/*.md but docs/benchmarks.md (sorted by name) and
// SECURITY.md, in that order, as they were when the binary was built
// (server/CMakeLists.txt embeds them; nothing reads the source tree at run
// time). Static storage.
std::span<const DemoDocument> DemoDocuments();

// The embedded document at `path`, or null.
const DemoDocument* FindDemoDocument(std::string_view path);

// The paragraphs of prose of a markdown document, in order: runs of
// non-blank lines (trailing whitespace removed) outside fenced code blocks,
// without table rows (lines starting with '|'), which end a paragraph as a
// blank line does. Headings and list items are prose. Code and tables are
// left out, so the demo learns the documentation's sentences, and the
// examples and measurements shown in it do not change what it learns.
std::vector<std::string> ProseParagraphs(std::string_view markdown);

// One exchange per heading of a markdown document, for the demo to learn
// its chat format: the heading's text (without '#' and backquotes) as the
// user's message, and the first paragraph of prose of its section as the
// assistant's (a paragraph that starts with a letter, a digit, '`' or
// '*', not a list item), cut after the last ". " within `max_answer_bytes` (a section
// whose first sentence is longer has no exchange). Sections without prose
// have none either.
std::vector<ChatPrompt> SectionExchanges(std::string_view markdown, size_t max_answer_bytes);

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_DEMO_CORPUS_H_
