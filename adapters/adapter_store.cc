#include "adapters/adapter_store.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/crc/crc32c.h"
#include "absl/log/log.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"

namespace adapterd::adapters {
namespace {

namespace fs = std::filesystem;
constexpr char kManifest[] = "manifest.json";
constexpr char kFormat[] = "adapterd-store/1";
constexpr char kTempPrefix[] = ".tmp-";

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat("adapter store: ", what, " ", path, ": ", std::strerror(errno)));
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("cannot fsync", path);
  return absl::OkStatus();
}

absl::Status WriteFileSynced(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot create", path);
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status st = Errno("cannot write", path);
      ::close(fd);
      return st;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status st = Errno("cannot fsync", path);
    ::close(fd);
    return st;
  }
  if (::close(fd) != 0) return Errno("cannot close", path);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) { return ReadFileToString(path); }

// Plain names only: no directories, no hidden files, not the manifest.
bool SafeFileName(const std::string& name) {
  return !name.empty() && name.size() <= 255 && name[0] != '.' && name != kManifest &&
         name.find('/') == std::string::npos && name.find('\0') == std::string::npos;
}

uint32_t Crc(const std::string& data) { return static_cast<uint32_t>(absl::ComputeCrc32c(data)); }

}  // namespace

absl::StatusOr<std::unique_ptr<AdapterStore>> AdapterStore::Open(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("--adapter_store ", dir, ": ", ec.message()));
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("--adapter_store ", dir, " is not a directory"));
  }
  if (::access(dir.c_str(), W_OK) != 0) return Errno("--adapter_store is not writable:", dir);
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (absl::StartsWith(name, kTempPrefix)) {
      LOG(WARNING) << "adapter store: removing " << e.path() << ", left by an interrupted write";
      fs::remove_all(e.path(), ec);
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("adapter store: cannot list ", dir, ": ", ec.message()));
  return std::unique_ptr<AdapterStore>(new AdapterStore(dir));
}

std::string AdapterStore::EntryDir(const std::string& id) const { return absl::StrCat(dir_, "/", id); }

absl::Status AdapterStore::Put(const std::string& id, const AdapterSource& source, bool pinned) {
  absl::MutexLock lock(&mu_);
  const std::string tmp = absl::StrCat(dir_, "/", kTempPrefix, id, "-", getpid(), "-", ++counter_);
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) {
    return absl::InternalError(absl::StrCat("adapter store: cannot create ", tmp, ": ", ec.message()));
  }
  auto fail = [&](absl::Status st) {
    fs::remove_all(tmp, ec);
    return st;
  };
  nlohmann::json manifest = {{"format", kFormat}, {"id", id}, {"pinned", pinned}};
  if (const auto* path = std::get_if<PathSource>(&source)) {
    manifest["source"] = "path";
    manifest["path"] = fs::absolute(path->dir).string();
  } else {
    manifest["source"] = "upload";
    nlohmann::json files = nlohmann::json::array();
    for (const auto& [name, data] : std::get<UploadSource>(source).files) {
      if (!SafeFileName(name)) {
        return fail(absl::InvalidArgumentError(absl::StrCat("adapter store: file name '", name, "' is not a plain file name")));
      }
      if (absl::Status st = WriteFileSynced(tmp + "/" + name, data); !st.ok()) return fail(st);
      files.push_back({{"name", name}, {"bytes", data.size()}, {"crc32c", Crc(data)}});
    }
    manifest["files"] = std::move(files);
  }
  // The manifest is written last: an entry without one is never complete.
  if (absl::Status st = WriteFileSynced(tmp + "/" + kManifest, manifest.dump(2) + "\n"); !st.ok()) {
    return fail(st);
  }
  if (absl::Status st = FsyncPath(tmp, true); !st.ok()) return fail(st);
  const std::string final_dir = absl::StrCat(dir_, "/", id);
  if (fs::exists(final_dir, ec)) {
    // Atomic swap of the old entry and the new one; the old one, now under
    // the temporary name, is deleted afterwards.
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
      return fail(Errno("cannot swap in", final_dir));
    }
  } else if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    return fail(Errno("cannot rename into", final_dir));
  }
  fs::remove_all(tmp, ec);
  return FsyncPath(dir_, true);
}

absl::Status AdapterStore::Remove(const std::string& id) {
  absl::MutexLock lock(&mu_);
  const std::string final_dir = absl::StrCat(dir_, "/", id);
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) return absl::OkStatus();
  // Renamed away first, so that a crash mid-delete leaves no half entry.
  const std::string tmp = absl::StrCat(dir_, "/", kTempPrefix, id, "-", getpid(), "-", ++counter_);
  if (::rename(final_dir.c_str(), tmp.c_str()) != 0) return Errno("cannot remove", final_dir);
  if (absl::Status st = FsyncPath(dir_, true); !st.ok()) return st;
  fs::remove_all(tmp, ec);
  return absl::OkStatus();
}

absl::StatusOr<StoredAdapter> AdapterStore::ReadEntry(const std::string& id) const {
  const std::string entry = absl::StrCat(dir_, "/", id);
  absl::StatusOr<std::string> text = ReadFile(entry + "/" + kManifest);
  if (!text.ok()) return absl::DataLossError(absl::StrCat("adapter store entry ", entry, ": no readable ", kManifest));
  const nlohmann::json m = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("adapter store entry ", entry, ": ", why));
  };
  if (!m.is_object() || m.value("format", "") != kFormat) return bad(absl::StrCat(kManifest, " is not an ", kFormat, " manifest"));
  if (!m["id"].is_string() || m["id"].get<std::string>() != id) return bad("the manifest's id does not match the directory");
  StoredAdapter out{id, PathSource{}};
  out.pinned = m.contains("pinned") && m["pinned"].is_boolean() && m["pinned"].get<bool>();
  const std::string kind = m.value("source", "");
  if (kind == "path") {
    if (!m["path"].is_string()) return bad("the manifest's path is not a string");
    out.source = PathSource{m["path"].get<std::string>()};
    return out;
  }
  if (kind != "upload" || !m["files"].is_array()) return bad("the manifest's source is neither path nor upload");
  for (const auto& f : m["files"]) {
    if (!f.is_object() || !f["name"].is_string() || !f["bytes"].is_number_unsigned() ||
        !f["crc32c"].is_number_unsigned()) {
      return bad("a manifest file record is malformed");
    }
    const std::string name = f["name"].get<std::string>();
    if (!SafeFileName(name)) return bad(absl::StrCat("file name '", name, "' is not a plain file name"));
    absl::StatusOr<std::string> data = ReadFile(entry + "/" + name);
    if (!data.ok()) return bad(absl::StrCat(name, " is missing"));
    if (data->size() != f["bytes"].get<uint64_t>() || Crc(*data) != f["crc32c"].get<uint32_t>()) {
      return bad(absl::StrCat(name, " does not match its size or CRC32C in the manifest"));
    }
  }
  // Checked, then let go: a store of thousands of adapters is never in memory at once.
  out.source = PathSource{entry};
  out.upload = true;
  return out;
}

StoreScan AdapterStore::Scan() const {
  absl::MutexLock lock(&mu_);
  StoreScan scan;
  std::error_code ec;
  std::vector<std::string> ids;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (absl::StartsWith(name, ".")) continue;
    if (!e.is_directory(ec)) {
      scan.skipped.push_back(absl::DataLossError(absl::StrCat("adapter store: ", e.path().string(), " is not an entry directory")));
      continue;
    }
    ids.push_back(name);
  }
  if (ec) scan.skipped.push_back(absl::InternalError(absl::StrCat("adapter store: cannot list ", dir_, ": ", ec.message())));
  std::sort(ids.begin(), ids.end());
  for (const std::string& id : ids) {
    absl::StatusOr<StoredAdapter> entry = ReadEntry(id);
    if (entry.ok()) {
      scan.adapters.push_back(*std::move(entry));
    } else {
      scan.skipped.push_back(entry.status());
    }
  }
  return scan;
}

}  // namespace adapterd::adapters
