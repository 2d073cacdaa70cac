#include "adapters/path_policy.h"

#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "adapters/adapter_files.h"

namespace adapterd::adapters {
namespace {

namespace fs = std::filesystem;

// Messages quote at most this much of a client-supplied path.
std::string Quoted(const std::string& path) {
  return absl::StrCat("'", path.size() > 200 ? path.substr(0, 200) + "..." : path, "'");
}

}  // namespace

absl::StatusOr<PathPolicy> PathPolicy::Create(const std::vector<std::string>& roots) {
  std::vector<std::string> resolved;
  for (const std::string& root : roots) {
    if (root.empty()) continue;
    std::error_code ec;
    fs::path r = fs::canonical(root, ec);
    if (ec || !fs::is_directory(r, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--adapter_roots entry ", Quoted(root), " is not an existing directory"));
    }
    std::string s = r.string();
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    resolved.push_back(std::move(s));
  }
  return PathPolicy(std::move(resolved));
}

bool PathPolicy::Inside(const std::string& resolved) const {
  for (const std::string& root : roots_) {
    if (root == "/") return true;
    if (resolved == root || (resolved.size() > root.size() && resolved.compare(0, root.size(), root) == 0 &&
                             resolved[root.size()] == '/')) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<std::string> PathPolicy::Confine(const std::string& path) const {
  if (roots_.empty()) {
    return absl::FailedPreconditionError(
        "path loads are disabled: the server has no --adapter_roots; upload the files instead");
  }
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("path must not contain NUL bytes");
  }
  const fs::path p(path);
  if (!p.is_absolute()) return absl::InvalidArgumentError(absl::StrCat("path ", Quoted(path), " must be absolute"));
  for (const fs::path& part : p) {
    if (part == "..") {
      return absl::InvalidArgumentError(absl::StrCat("path ", Quoted(path), " must not contain '..'"));
    }
  }
  std::error_code ec;
  const fs::path dir = fs::canonical(p, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("adapter directory ", Quoted(path), " does not exist"));
  if (!Inside(dir.string())) {
    return absl::PermissionDeniedError(
        absl::StrCat("path ", Quoted(path), " is outside the server's --adapter_roots"));
  }
  // The files the loader will open must not lead out of the roots either.
  for (const char* name : kAdapterFileNames) {
    const fs::path f = dir / name;
    if (!fs::exists(fs::symlink_status(f, ec))) continue;
    const fs::path target = fs::canonical(f, ec);
    if (ec || !Inside(target.string())) {
      return absl::PermissionDeniedError(absl::StrCat("path ", Quoted(path), ": ", name,
                                                      " is a link that leads outside the server's --adapter_roots"));
    }
  }
  return dir.string();
}

}  // namespace adapterd::adapters
