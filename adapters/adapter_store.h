// The adapter store: the registered adapters, on disk, across restarts.
#ifndef ADAPTERD_ADAPTERS_ADAPTER_STORE_H_
#define ADAPTERD_ADAPTERS_ADAPTER_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "adapters/adapter_source.h"

namespace adapterd::adapters {

struct StoredAdapter {
  std::string id;
  // The directory to load it from: the entry's own for an upload (`upload`),
  // the recorded one for a path load.
  PathSource source;
  bool upload = false;
  bool pinned = false;  // kept on the device tier
};

// What Scan() found: the intact entries, and one error per entry skipped.
struct StoreScan {
  std::vector<StoredAdapter> adapters;  // sorted by id
  std::vector<absl::Status> skipped;
};

// One directory per adapter id under the store directory. An entry holds a
// manifest.json (the source kind, and for an upload each file's size and
// CRC32C) and an upload's files; a path load is recorded by its directory,
// not copied. Put() writes a new entry into a temporary directory, fsyncs
// its files and the directory, and then swaps it into place with one
// rename, so a crash at any point leaves either the old entry or the new
// one, never a mix; Open() deletes the temporaries a crash left behind.
// Thread-safe: Put and Remove are serialized.
class AdapterStore {
 public:
  // Creates `dir` if needed and removes leftovers of interrupted writes.
  static absl::StatusOr<std::unique_ptr<AdapterStore>> Open(const std::string& dir);

  // Records `id` (replacing any entry for it) durably before returning.
  absl::Status Put(const std::string& id, const AdapterSource& source, bool pinned = false)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Deletes the entry; OK when there is none.
  absl::Status Remove(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);
  // Checks every entry, reading one file at a time. An entry whose manifest
  // is missing or unreadable, or whose files do not match it, is reported in
  // `skipped` and left on disk for the operator; it never fails the scan.
  StoreScan Scan() const ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& dir() const { return dir_; }
  // Where an upload's files live once Put() has returned (the entry's
  // directory; its files keep their upload names).
  std::string EntryDir(const std::string& id) const;

 private:
  explicit AdapterStore(std::string dir) : dir_(std::move(dir)) {}
  absl::StatusOr<StoredAdapter> ReadEntry(const std::string& id) const;

  const std::string dir_;
  mutable absl::Mutex mu_;
  int64_t counter_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_ADAPTER_STORE_H_
