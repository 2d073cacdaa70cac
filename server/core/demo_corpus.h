// The project's documentation, embedded in the binary at build time, from
// which the demo model is trained.
#ifndef ADAPTERD_SERVER_CORE_DEMO_CORPUS_H_
#define ADAPTERD_SERVER_CORE_DEMO_CORPUS_H_

#include <span>
#include <string_view>

namespace adapterd::core {

struct DemoDocument {
  std::string_view path;  // relative to the source tree, e.g. "docs/architecture.md"
  std::string_view text;  // the file's bytes as built
};

// README.md, every docs/*.md (sorted by name) and SECURITY.md, in that
// order, as they were when the binary was built (server/CMakeLists.txt
// embeds them; nothing reads the source tree at run time). Static storage.
std::span<const DemoDocument> DemoDocuments();

// The embedded document at `path`, or null.
const DemoDocument* FindDemoDocument(std::string_view path);

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_DEMO_CORPUS_H_
