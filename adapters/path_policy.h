// Which server directories an Admin path load may read.
#ifndef ADAPTERD_ADAPTERS_PATH_POLICY_H_
#define ADAPTERD_ADAPTERS_PATH_POLICY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace adapterd::adapters {

// Confines path loads to configured root directories. A path is accepted
// only when it is absolute, has no ".." component, and both the directory
// and every adapter file in it resolve (symlinks followed) to a place under
// one of the roots. With no roots, path loads are refused. Immutable after
// Create(), so thread-safe.
//
// The check happens before the load reads the files; an operator who lets
// untrusted users write inside a root and swap files for symlinks in that
// window is outside this policy's scope (see SECURITY.md).
class PathPolicy {
 public:
  // `roots` must exist; each is resolved once here. Errors name the root.
  static absl::StatusOr<PathPolicy> Create(const std::vector<std::string>& roots);

  // The resolved directory to load from, or PERMISSION_DENIED /
  // INVALID_ARGUMENT / FAILED_PRECONDITION naming the path.
  absl::StatusOr<std::string> Confine(const std::string& path) const;

  const std::vector<std::string>& roots() const { return roots_; }

 private:
  explicit PathPolicy(std::vector<std::string> roots) : roots_(std::move(roots)) {}
  bool Inside(const std::string& resolved) const;

  std::vector<std::string> roots_;  // resolved, without a trailing '/'
};

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_PATH_POLICY_H_
