#include "adapters/adapter_store.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <filesystem>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/crc/crc32c.h"
#include "absl/log/log.h"
#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"

namespace adapterd::adapters {
namespace {

namespace fs = std::filesystem;
constexpr char kManifest[] = "manifest.json";
constexpr char kFormat[] = "adapterd-store/2";
constexpr char kFormatV1[] = "adapterd-store/1";  // files in the entry itself; read, never written
constexpr char kTempPrefix[] = ".tmp-";
constexpr char kLockFile[] = ".lock";

// Unique per write across the processes sharing a store: pid, time and
// random bits.
std::string NewStamp() {
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen ABSL_GUARDED_BY(mu) = new absl::BitGen();
  absl::MutexLock lock(&mu);
  return absl::StrFormat("%x-%x-%016x", getpid(), absl::ToUnixMicros(absl::Now()), absl::Uniform<uint64_t>(*gen));
}

// How long ago `path` was last modified (infinite when it cannot be read).
absl::Duration Age(const std::string& path) {
  std::error_code ec;
  const auto t = fs::last_write_time(path, ec);
  if (ec) return absl::InfiniteDuration();
  const auto now = fs::file_time_type::clock::now();
  return absl::FromChrono(now - t);
}

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

std::string VersionName(int64_t version) { return absl::StrCat("v", version); }

// The version a manifest records (0 when there is none or it is unreadable).
int64_t ManifestVersion(const std::string& entry) {
  absl::StatusOr<std::string> text = ReadFile(entry + "/" + kManifest);
  if (!text.ok()) return 0;
  const nlohmann::json m = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!m.is_object() || !m.contains("version") || !m["version"].is_number_unsigned()) return 0;
  return static_cast<int64_t>(m["version"].get<uint64_t>());
}

// The highest v<N> directory in an entry (0 when there is none).
int64_t HighestVersionDir(const std::string& entry) {
  int64_t highest = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(entry, ec)) {
    const std::string name = e.path().filename().string();
    int64_t n = 0;
    if (name.size() > 1 && name[0] == 'v' && absl::SimpleAtoi(name.substr(1), &n)) highest = std::max(highest, n);
  }
  return highest;
}

absl::Status RenameSynced(const std::string& from, const std::string& to, const std::string& parent) {
  if (::rename(from.c_str(), to.c_str()) != 0) return Errno("cannot rename into", to);
  return FsyncPath(parent, true);
}

}  // namespace

// Directories that Hold() keeps, and those superseded while held, which are
// deleted when their last hold goes. Shared with the holds, which may
// outlive the store. A leaf lock.
struct AdapterStore::Holds {
  absl::Mutex mu;
  absl::flat_hash_map<std::string, int> count ABSL_GUARDED_BY(mu);
  absl::flat_hash_set<std::string> superseded ABSL_GUARDED_BY(mu);

  bool HeldOrSupersede(const std::string& dir) ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    if (!count.contains(dir)) return false;
    superseded.insert(dir);
    return true;
  }
  void Release(const std::string& dir) ABSL_LOCKS_EXCLUDED(mu) {
    bool drop = false;
    {
      absl::MutexLock lock(&mu);
      if (--count[dir] > 0) return;
      count.erase(dir);
      drop = superseded.erase(dir) > 0;
    }
    std::error_code ec;
    if (drop) fs::remove_all(dir, ec);
  }
};

AdapterStore::AdapterStore(std::string dir, AdapterStoreOptions options)
    : dir_(std::move(dir)), options_(options), holds_(std::make_shared<Holds>()) {}

AdapterStore::~AdapterStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

absl::StatusOr<std::shared_ptr<void>> AdapterStore::LockWriters() {
  if (lock_fd_ < 0) return std::shared_ptr<void>();
  int rc;
  do {
    rc = ::flock(lock_fd_, LOCK_EX);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return Errno("cannot lock", dir_ + "/" + kLockFile);
  const int fd = lock_fd_;
  return std::shared_ptr<void>(nullptr, [fd](void*) { ::flock(fd, LOCK_UN); });
}

std::shared_ptr<const void> AdapterStore::Hold(const std::string& dir) {
  {
    absl::MutexLock lock(&holds_->mu);
    ++holds_->count[dir];
  }
  std::shared_ptr<Holds> holds = holds_;
  return std::shared_ptr<const void>(new std::string(dir), [holds](const void* p) {
    const auto* d = static_cast<const std::string*>(p);
    holds->Release(*d);
    delete d;
  });
}

absl::StatusOr<std::unique_ptr<AdapterStore>> AdapterStore::Open(const std::string& dir,
                                                                 AdapterStoreOptions options) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat("--adapter_store ", dir, ": ", ec.message()));
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("--adapter_store ", dir, " is not a directory"));
  }
  if (::access(dir.c_str(), W_OK) != 0) return Errno("--adapter_store is not writable:", dir);
  std::unique_ptr<AdapterStore> store(new AdapterStore(dir, options));
  if (options.shared) {
    store->lock_fd_ = ::open((dir + "/" + kLockFile).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (store->lock_fd_ < 0) return Errno("cannot open", dir + "/" + kLockFile);
  }
  // Another server sharing the store may be writing right now: only its
  // leftovers older than the grace period are a crash's.
  auto leftover = [&](const fs::path& p) { return !options.shared || Age(p.string()) > options.superseded_grace; };
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name == kLockFile) continue;
    if (absl::StartsWith(name, kTempPrefix)) {
      if (!leftover(e.path())) continue;
      LOG(WARNING) << "adapter store: removing " << e.path() << ", left by an interrupted write";
      fs::remove_all(e.path(), ec);
      continue;
    }
    // Inside an entry: interrupted writes, and versions a crash kept from
    // being deleted (nothing holds them at start-up).
    const int64_t current = ManifestVersion(e.path().string());
    const bool superseded_long_ago = leftover(e.path() / kManifest);
    std::error_code inner;
    for (const auto& c : fs::directory_iterator(e.path(), inner)) {
      const std::string child = c.path().filename().string();
      const bool old_version = current > 0 && child.size() > 1 && child[0] == 'v' && child != VersionName(current) &&
                               c.is_directory(inner) && superseded_long_ago;
      if ((absl::StartsWith(child, kTempPrefix) && leftover(c.path())) || old_version) fs::remove_all(c.path(), inner);
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("adapter store: cannot list ", dir, ": ", ec.message()));
  return store;
}

absl::StatusOr<std::string> AdapterStore::WriteVersion(const std::string& target, const std::string& id,
                                                      const AdapterSource& source, bool pinned, int64_t version,
                                                      bool fresh, const std::string& stamp) {
  nlohmann::json manifest = {
      {"format", kFormat}, {"id", id}, {"pinned", pinned}, {"version", version}, {"stamp", stamp}};
  std::string version_dir;
  if (const auto* path = std::get_if<PathSource>(&source)) {
    manifest["source"] = "path";
    manifest["path"] = fs::absolute(path->dir).string();
  } else {
    manifest["source"] = "upload";
    version_dir = VersionName(version);
    const std::string final_dir = target + "/" + version_dir;
    const std::string tmp = fresh ? final_dir : absl::StrCat(target, "/", kTempPrefix, version_dir, "-", ++counter_);
    std::error_code ec;
    fs::remove_all(tmp, ec);
    if (!fs::create_directory(tmp, ec)) {
      return absl::InternalError(absl::StrCat("adapter store: cannot create ", tmp, ": ", ec.message()));
    }
    nlohmann::json files = nlohmann::json::array();
    for (const auto& [name, data] : std::get<UploadSource>(source).files) {
      if (!SafeFileName(name)) {
        fs::remove_all(tmp, ec);
        return absl::InvalidArgumentError(absl::StrCat("adapter store: file name '", name, "' is not a plain file name"));
      }
      if (absl::Status st = WriteFileSynced(tmp + "/" + name, data); !st.ok()) return st;
      files.push_back({{"name", name}, {"bytes", data.size()}, {"crc32c", Crc(data)}});
    }
    manifest["files"] = std::move(files);
    if (absl::Status st = FsyncPath(tmp, true); !st.ok()) return st;
    if (!fresh) {
      if (absl::Status st = RenameSynced(tmp, final_dir, target); !st.ok()) return st;
    }
  }
  // The manifest is written last: it is what makes a version current.
  const std::string text = manifest.dump(2) + "\n";
  if (fresh) {
    if (absl::Status st = WriteFileSynced(target + "/" + kManifest, text); !st.ok()) return st;
    if (absl::Status st = FsyncPath(target, true); !st.ok()) return st;
  } else {
    const std::string tmp = absl::StrCat(target, "/", kTempPrefix, kManifest, "-", ++counter_);
    if (absl::Status st = WriteFileSynced(tmp, text); !st.ok()) return st;
    if (absl::Status st = RenameSynced(tmp, target + "/" + kManifest, target); !st.ok()) return st;
  }
  return version_dir;
}

void AdapterStore::DropOldVersions(const std::string& entry, const std::string& keep) {
  std::error_code ec;
  // Another server may still read a version it has not synced away from.
  if (options_.shared && Age(entry + "/" + kManifest) <= options_.superseded_grace) return;
  const bool entry_held = holds_->HeldOrSupersede(entry);  // a version 1 entry read from its own root
  for (const auto& c : fs::directory_iterator(entry, ec)) {
    const std::string name = c.path().filename().string();
    if (name == kManifest || name == keep) continue;
    if (c.is_directory(ec) && name.size() > 1 && name[0] == 'v') {
      if (!holds_->HeldOrSupersede(c.path().string())) fs::remove_all(c.path(), ec);
    } else if (absl::StartsWith(name, kTempPrefix) || !entry_held) {
      fs::remove_all(c.path(), ec);
    }
  }
}

absl::StatusOr<DiskCopy> AdapterStore::Put(const std::string& id, const AdapterSource& source, bool pinned,
                                           bool replace) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::shared_ptr<void>> writers = LockWriters();
  if (!writers.ok()) return writers.status();
  const std::string entry = absl::StrCat(dir_, "/", id);
  const std::string stamp = NewStamp();
  std::error_code ec;
  absl::StatusOr<std::string> version_dir;
  const bool exists = fs::exists(entry, ec);
  if (exists && !replace) {
    return absl::AlreadyExistsError(absl::StrCat("adapter '", id, "' is already in the adapter store ", dir_,
                                                 " (loaded here or by another server sharing it); set replace "
                                                 "to swap it for the new version"));
  }
  if (!exists) {
    const std::string tmp = absl::StrCat(dir_, "/", kTempPrefix, id, "-", getpid(), "-", ++counter_);
    fs::remove_all(tmp, ec);
    if (!fs::create_directory(tmp, ec)) {
      return absl::InternalError(absl::StrCat("adapter store: cannot create ", tmp, ": ", ec.message()));
    }
    version_dir = WriteVersion(tmp, id, source, pinned, 1, /*fresh=*/true, stamp);
    if (version_dir.ok()) {
      // rename(2) never replaces a non-empty directory: a writer that does
      // not honour the lock cannot make a mixed entry either.
      if (::rename(tmp.c_str(), entry.c_str()) != 0) {
        version_dir = (errno == EEXIST || errno == ENOTEMPTY)
                          ? absl::AlreadyExistsError(absl::StrCat("adapter '", id, "' was written to the adapter store by another server at the same time; retry with replace"))
                          : Errno("cannot rename into", entry);
      } else if (absl::Status st = FsyncPath(dir_, true); !st.ok()) {
        version_dir = st;
      }
    }
    if (!version_dir.ok()) {
      fs::remove_all(tmp, ec);
      return version_dir.status();
    }
  } else {
    const int64_t version = std::max(ManifestVersion(entry), HighestVersionDir(entry)) + 1;
    version_dir = WriteVersion(entry, id, source, pinned, version, /*fresh=*/false, stamp);
    if (!version_dir.ok()) return version_dir.status();
    DropOldVersions(entry, *version_dir);
  }
  if (const auto* path = std::get_if<PathSource>(&source)) return DiskCopy{path->dir, nullptr, stamp};
  const std::string dir = absl::StrCat(entry, "/", *version_dir);
  return DiskCopy{dir, Hold(dir), stamp};
}

absl::Status AdapterStore::Remove(const std::string& id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::shared_ptr<void>> writers = LockWriters();
  if (!writers.ok()) return writers.status();
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
  if (!text.ok()) {
    std::error_code ec;
    if (!fs::exists(entry, ec)) return absl::NotFoundError(absl::StrCat("adapter store has no entry ", entry));
    return absl::DataLossError(absl::StrCat("adapter store entry ", entry, ": no readable ", kManifest));
  }
  // Not const: operator[] on a key the manifest lacks then gives null
  // instead of undefined behaviour.
  nlohmann::json m = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  const auto text_of = [&](const char* key) {
    return m.is_object() && m[key].is_string() ? m[key].get<std::string>() : std::string();
  };
  auto bad = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("adapter store entry ", entry, ": ", why));
  };
  const std::string format = text_of("format");
  if (format != kFormat && format != kFormatV1) {
    return bad(absl::StrCat(kManifest, " is not an ", kFormat, " manifest"));
  }
  if (!m["id"].is_string() || m["id"].get<std::string>() != id) return bad("the manifest's id does not match the directory");
  StoredAdapter out;
  out.id = id;
  if (m.contains("stamp") && m["stamp"].is_string()) out.stamp = m["stamp"].get<std::string>();
  out.pinned = m.contains("pinned") && m["pinned"].is_boolean() && m["pinned"].get<bool>();
  std::string files_dir = entry;
  if (format == kFormat) {
    if (!m.contains("version") || !m["version"].is_number_unsigned() || m["version"].get<uint64_t>() == 0) {
      return bad("the manifest's version is not a positive integer");
    }
    out.version = static_cast<int64_t>(m["version"].get<uint64_t>());
    files_dir = absl::StrCat(entry, "/", VersionName(out.version));
  }
  const std::string kind = text_of("source");
  if (kind == "path") {
    if (!m["path"].is_string()) return bad("the manifest's path is not a string");
    out.source = PathSource{m["path"].get<std::string>()};
    return out;
  }
  if (kind != "upload" || !m["files"].is_array()) return bad("the manifest's source is neither path nor upload");
  for (auto& f : m["files"]) {
    if (!f.is_object() || !f["name"].is_string() || !f["bytes"].is_number_unsigned() ||
        !f["crc32c"].is_number_unsigned()) {
      return bad("a manifest file record is malformed");
    }
    const std::string name = f["name"].get<std::string>();
    if (!SafeFileName(name)) return bad(absl::StrCat("file name '", name, "' is not a plain file name"));
    absl::StatusOr<std::string> data = ReadFile(files_dir + "/" + name);
    if (!data.ok()) return bad(absl::StrCat(name, " is missing"));
    if (data->size() != f["bytes"].get<uint64_t>() || Crc(*data) != f["crc32c"].get<uint32_t>()) {
      return bad(absl::StrCat(name, " does not match its size or CRC32C in the manifest"));
    }
  }
  // Checked, then let go: a store of thousands of adapters is never in memory at once.
  out.source = PathSource{files_dir};
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

absl::StatusOr<StoredAdapter> AdapterStore::Find(const std::string& id) const {
  if (id.empty() || id[0] == '.' || id.find('/') != std::string::npos) {
    return absl::NotFoundError(absl::StrCat("adapter store has no entry '", id, "'"));
  }
  absl::MutexLock lock(&mu_);
  return ReadEntry(id);
}

std::vector<ManifestEntry> AdapterStore::Manifests() const {
  std::vector<ManifestEntry> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (absl::StartsWith(name, ".")) continue;
    absl::StatusOr<std::string> text = ReadFile(e.path().string() + "/" + kManifest);
    if (!text.ok()) continue;
    const nlohmann::json m = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (!m.is_object()) continue;
    ManifestEntry entry;
    entry.id = name;
    if (m.contains("stamp") && m["stamp"].is_string()) entry.stamp = m["stamp"].get<std::string>();
    entry.pinned = m.contains("pinned") && m["pinned"].is_boolean() && m["pinned"].get<bool>();
    out.push_back(std::move(entry));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

bool AdapterStore::Has(const std::string& id) const {
  if (id.empty() || id[0] == '.' || id.find('/') != std::string::npos) return false;
  std::error_code ec;
  return fs::exists(absl::StrCat(dir_, "/", id, "/", kManifest), ec);
}

void AdapterStore::SweepSuperseded() {
  absl::MutexLock lock(&mu_);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (absl::StartsWith(name, ".") || !e.is_directory(ec)) continue;
    const int64_t current = ManifestVersion(e.path().string());
    if (current > 0) DropOldVersions(e.path().string(), VersionName(current));
  }
}

}  // namespace adapterd::adapters
