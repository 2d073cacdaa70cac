// Where an adapter's files come from.
#ifndef ADAPTERD_ADAPTERS_ADAPTER_SOURCE_H_
#define ADAPTERD_ADAPTERS_ADAPTER_SOURCE_H_

#include <map>
#include <string>
#include <variant>

namespace adapterd::adapters {

// A directory the server reads (a path load).
struct PathSource {
  std::string dir;
};
// Files sent by the client (an upload).
struct UploadSource {
  std::map<std::string, std::string> files;  // file name -> contents
};
using AdapterSource = std::variant<PathSource, UploadSource>;

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_ADAPTER_SOURCE_H_
