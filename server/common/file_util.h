// Reading and writing whole files, the one way every layer does it.
#ifndef ADAPTERD_SERVER_COMMON_FILE_UTIL_H_
#define ADAPTERD_SERVER_COMMON_FILE_UTIL_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace adapterd {

// The bytes of the file at `path`. NOT_FOUND when it cannot be opened,
// DATA_LOSS when reading fails part way; messages start with the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Replaces the file at `path` with `bytes` (not atomically: for files
// written once into a directory that is published afterwards). INTERNAL,
// naming the path, when it cannot be written.
absl::Status WriteStringToFile(const std::string& path, std::string_view bytes);

}  // namespace adapterd

#endif  // ADAPTERD_SERVER_COMMON_FILE_UTIL_H_
