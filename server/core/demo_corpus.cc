#include "server/core/demo_corpus.h"

namespace adapterd::core {

const DemoDocument* FindDemoDocument(std::string_view path) {
  for (const DemoDocument& d : DemoDocuments()) {
    if (d.path == path) return &d;
  }
  return nullptr;
}

}  // namespace adapterd::core
