// Where an adapter's files come from.
#ifndef ADAPTERD_ADAPTERS_ADAPTER_SOURCE_H_
#define ADAPTERD_ADAPTERS_ADAPTER_SOURCE_H_

#include <map>
#include <memory>
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

// Where a registered adapter's files can be read back from: a directory,
// and what keeps that directory from being deleted while it may be read
// (the adapter store's hold on an upload's version directory; null for a
// directory the store does not manage).
struct DiskCopy {
  std::string dir;
  std::shared_ptr<const void> hold;
  // The adapter store's stamp of the entry version written (empty when the
  // copy is not a store entry): unique per write, so that replicas sharing
  // the store can tell one version from another.
  std::string stamp;
};

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_ADAPTER_SOURCE_H_
