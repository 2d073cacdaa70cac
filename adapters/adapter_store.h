// The adapter store: the registered adapters, on disk, across restarts.
#ifndef ADAPTERD_ADAPTERS_ADAPTER_STORE_H_
#define ADAPTERD_ADAPTERS_ADAPTER_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "adapters/adapter_source.h"

namespace adapterd::adapters {

struct StoredAdapter {
  std::string id;
  // The directory to load it from: an upload's version directory inside
  // its entry (`upload`), or the recorded directory of a path load.
  PathSource source;
  bool upload = false;
  bool pinned = false;  // kept on the device tier
  int64_t version = 0;
  std::string stamp;  // unique per write (see DiskCopy::stamp)
};

// What a manifest alone says about an entry (see AdapterStore::Manifests).
struct ManifestEntry {
  std::string id;
  std::string stamp;
  bool pinned = false;
};

struct AdapterStoreOptions {
  // Several servers share the directory (a ReadWriteMany volume). Writers
  // of any process are then serialized by an advisory lock on the store's
  // .lock file, and a superseded version directory is kept for
  // `superseded_grace` after the replace (another server may still read it
  // until it syncs), then deleted by SweepSuperseded().
  bool shared = false;
  absl::Duration superseded_grace = absl::Seconds(60);
};

// What Scan() found: the intact entries, and one error per entry skipped.
struct StoreScan {
  std::vector<StoredAdapter> adapters;  // sorted by id
  std::vector<absl::Status> skipped;
};

// One directory per adapter id under the store directory. An entry holds a
// manifest.json (format adapterd-store/2: the source kind, a version number,
// and for an upload each file's size and CRC32C) and, for an upload, one
// version directory v<N> with its files; a path load is recorded by its
// directory, not copied.
//
// Put() never changes a version directory once written. A new id's entry
// is written whole into a temporary directory and renamed into place; a new
// version of an existing entry is written into its own v<N> directory, and
// then the manifest is replaced with one rename. Every file and directory
// is fsynced before the rename that publishes it, so a crash at any point
// leaves the old version or the new one, never a mix; Open() deletes what
// a crash left behind. An earlier version's directory is deleted once no
// Hold() keeps it, so that an adapter version still being served can be
// read back from disk while a newer one replaces it.
//
// Every manifest carries a stamp, unique per write, so that servers sharing
// the directory can tell whether the version they hold is still current
// (Manifests()) without reading any adapter file.
//
// Thread-safe: Put and Remove are serialized, within the process by a
// mutex and, for a shared store, across processes by flock(2) on .lock
// (Linux maps it to POSIX locks on NFS). Subclasses (test fakes) may
// intercept Put and Remove.
class AdapterStore {
 public:
  // Creates `dir` if needed and removes leftovers of interrupted writes
  // (for a shared store, only those older than the grace period: another
  // server may be writing them).
  static absl::StatusOr<std::unique_ptr<AdapterStore>> Open(const std::string& dir,
                                                             AdapterStoreOptions options = {});
  virtual ~AdapterStore();

  // Records `id` durably before returning, replacing any entry for it unless
  // `replace` is false: then ALREADY_EXISTS when the store has it (written by
  // this server or another one sharing the store). Returns where the version
  // just written can be read back, held, and its stamp.
  virtual absl::StatusOr<DiskCopy> Put(const std::string& id, const AdapterSource& source, bool pinned = false,
                                       bool replace = true) ABSL_LOCKS_EXCLUDED(mu_);
  // Deletes the entry, every version included; OK when there is none.
  virtual absl::Status Remove(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);
  // Checks every entry, reading one file at a time. An entry whose manifest
  // is missing or unreadable, or whose files do not match it, is reported in
  // `skipped` and left on disk for the operator; it never fails the scan.
  StoreScan Scan() const ABSL_LOCKS_EXCLUDED(mu_);
  // The intact entry `id`, its files checked against the manifest:
  // NOT_FOUND when there is none, DATA_LOSS when it is damaged.
  absl::StatusOr<StoredAdapter> Find(const std::string& id) const ABSL_LOCKS_EXCLUDED(mu_);
  // Every entry's id, the stamp of its current version and whether it is
  // pinned, read from the manifests only (entries with no readable manifest
  // are left out), sorted by id.
  std::vector<ManifestEntry> Manifests() const;
  // Whether the store has an entry `id` (its manifest exists); reads no file.
  bool Has(const std::string& id) const;
  // Deletes version directories superseded longer than the grace period
  // ago that this process does not hold (shared stores; see Options).
  void SweepSuperseded() ABSL_LOCKS_EXCLUDED(mu_);

  // Keeps `dir` (a version directory) from being deleted by a later Put
  // until the result is let go of. Any other directory is never deleted by
  // Put, so holding it is harmless. The hold may outlive the store.
  std::shared_ptr<const void> Hold(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool shared() const { return options_.shared; }

 protected:
  explicit AdapterStore(std::string dir, AdapterStoreOptions options = {});

 private:
  struct Holds;
  absl::StatusOr<StoredAdapter> ReadEntry(const std::string& id) const;
  // Writes `id`'s entry as version `version` into `target` (a temporary
  // directory for a new entry, or the existing entry).
  absl::StatusOr<std::string> WriteVersion(const std::string& entry, const std::string& id,
                                           const AdapterSource& source, bool pinned, int64_t version, bool fresh,
                                           const std::string& stamp) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes the entry's version directories other than `keep`, except held
  // ones, which are deleted when their last hold goes.
  void DropOldVersions(const std::string& entry, const std::string& keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the cross-process writers' lock of a shared store (a no-op
  // otherwise); released by the returned object.
  absl::StatusOr<std::shared_ptr<void>> LockWriters() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;
  const AdapterStoreOptions options_;
  int lock_fd_ = -1;  // .lock of a shared store
  const std::shared_ptr<Holds> holds_;
  mutable absl::Mutex mu_;
  int64_t counter_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_ADAPTER_STORE_H_
