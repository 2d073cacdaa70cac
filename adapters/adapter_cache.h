// Where registered adapters live: the device tier, host memory, or disk only.
#ifndef ADAPTERD_ADAPTERS_ADAPTER_CACHE_H_
#define ADAPTERD_ADAPTERS_ADAPTER_CACHE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "adapters/adapter_source.h"
#include "server/engine/request.h"
#include "server/metrics/server_metrics.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

// device: the weights are built on the model's device and can run now.
// host: the adapter's files are in host memory; building them is all a load
// has left to do. disk: only a directory holds it (the adapter store's
// entry, or the path it was loaded from).
enum class Tier { kDevice = 0, kHost = 1, kDisk = 2 };
std::string_view TierName(Tier t);

struct AdapterCacheOptions {
  int64_t device_bytes = 0;  // budget for built weights; 0 = no limit
  int64_t host_bytes = 0;    // budget for adapter files held in memory; 0 = no limit
  int loader_nice = 5;       // the loader thread's nice value (0 to 19)
};

class AdapterCache;

// One registered version of one adapter, as the cache tracks it. Owned by
// the registry's entry and by the leases of requests that use it; when the
// last owner lets go, its bytes leave every tier. Its state is guarded by
// the cache's mutex; the fields here are fixed at creation.
class CacheSlot : public std::enable_shared_from_this<CacheSlot> {
 public:
  ~CacheSlot();
  CacheSlot(const CacheSlot&) = delete;
  CacheSlot& operator=(const CacheSlot&) = delete;

  const std::string& id() const { return id_; }
  int64_t device_bytes() const { return device_bytes_; }
  int64_t host_bytes() const { return host_bytes_; }

 private:
  friend class AdapterCache;
  CacheSlot(AdapterCache* cache, std::string id, int64_t device_bytes, int64_t host_bytes,
            std::optional<std::string> disk_dir, int64_t num_virtual_tokens)
      : cache_(cache), id_(std::move(id)), device_bytes_(device_bytes), host_bytes_(host_bytes),
        disk_dir_(std::move(disk_dir)), num_virtual_tokens_(num_virtual_tokens) {}

  AdapterCache* const cache_;
  const std::string id_;
  const int64_t device_bytes_;
  const int64_t host_bytes_;
  const std::optional<std::string> disk_dir_;  // none: the host copy is the only one
  const int64_t num_virtual_tokens_;

  // Guarded by cache_->mu_ (the analysis cannot name it from here).
  std::shared_ptr<const model::AdapterWeights> device_;
  std::shared_ptr<const UploadSource> host_;
  int64_t leases_ = 0;
  bool pinned_ = false;
  bool loading_ = false;
  bool offload_when_idle_ = false;
  uint64_t last_use_ = 0;
  absl::Status load_error_;
  Tier reported_tier_ = Tier::kDisk;  // what the resident{} series says
  bool reported_ = false;
};

// Keeps registered adapters within byte budgets on the device tier and the
// host tier, and brings them in on demand.
//
// A request takes a lease (Lease()) before it is queued. A lease keeps its
// adapter from being evicted once resident; when the adapter is not on the
// device tier, taking the first lease queues one load on the cache's loader
// thread (a burst of requests for one cold adapter loads it once), from the
// host copy if there is one, else from disk. Loads never run on the engine
// thread and never wait behind registration loads. Room is made by evicting
// the least recently used idle adapters: device -> host (if the host copy is
// kept) -> disk. An adapter with a lease or a pin is never evicted. Reading
// from disk keeps a host copy when the host budget allows.
//
// An adapter with no directory to read it back from (an upload without an
// adapter store) keeps its host copy for as long as it is registered.
// A lease whose adapter can never fit (the rest of the device budget is
// pinned) fails with RESOURCE_EXHAUSTED instead of waiting. While leases
// keep every device byte busy, a cold adapter waits for one to end: with a
// budget that holds few adapters, steady traffic to those can hold it back.
// Thread-safe. The base model, and metrics if given, must outlive it, and it
// must outlive every slot and lease it handed out.
class AdapterCache {
 public:
  AdapterCache(const model::LlamaModel* base, AdapterCacheOptions options,
               metrics::ServerMetrics* metrics);
  ~AdapterCache();  // finishes the load in progress and joins the loader thread
  AdapterCache(const AdapterCache&) = delete;
  AdapterCache& operator=(const AdapterCache&) = delete;

  // Registers a newly built version. `weights` go to the device tier
  // (evicting idle adapters if needed; when nothing can make room they are
  // dropped and loaded again on first use) and `files` to the host tier when
  // they fit. RESOURCE_EXHAUSTED when the adapter is larger than the device
  // budget, when `pinned` and the device tier cannot make room, or when it
  // has no `disk_dir` and the host tier cannot make room for its files.
  absl::StatusOr<std::shared_ptr<CacheSlot>> Insert(
      std::string id, std::shared_ptr<const model::AdapterWeights> weights,
      std::shared_ptr<const UploadSource> files, std::optional<std::string> disk_dir, bool pinned)
      ABSL_LOCKS_EXCLUDED(mu_);

  // A lease on `slot` for one request (see the class comment). Never waits.
  std::shared_ptr<engine::AdapterLease> Lease(std::shared_ptr<CacheSlot> slot) ABSL_LOCKS_EXCLUDED(mu_);

  // Drops the slot's device and host copies, at once or, while leases hold
  // it, when the last one ends. FAILED_PRECONDITION when it has no directory
  // to come back from or is pinned.
  absl::Status Offload(CacheSlot& slot) ABSL_LOCKS_EXCLUDED(mu_);

  Tier TierOf(const CacheSlot& slot) const ABSL_LOCKS_EXCLUDED(mu_);
  bool Pinned(const CacheSlot& slot) const ABSL_LOCKS_EXCLUDED(mu_);

  struct Stats {
    int64_t device_adapters = 0, device_bytes = 0;  // includes bytes reserved by a load in progress
    int64_t host_adapters = 0, host_bytes = 0;
    int64_t disk_adapters = 0, disk_bytes = 0;
    int64_t loads_from_host = 0, loads_from_disk = 0, load_failures = 0;
    int64_t evictions_device = 0, evictions_host = 0;
    int64_t hits = 0, misses = 0;
    int64_t waiting_leases = 0;  // leases still waiting for their adapter
  };
  Stats GetStats() const ABSL_LOCKS_EXCLUDED(mu_);
  const AdapterCacheOptions& options() const { return options_; }

 private:
  class LeaseImpl;
  friend class CacheSlot;
  friend class LeaseImpl;

  absl::StatusOr<const model::AdapterWeights*> Resolve(CacheSlot& slot, bool& waiting)
      ABSL_LOCKS_EXCLUDED(mu_);
  void ReleaseLease(CacheSlot& slot, bool waiting) ABSL_LOCKS_EXCLUDED(mu_);
  void Forget(CacheSlot* slot) ABSL_LOCKS_EXCLUDED(mu_);
  void QueueLoadLocked(CacheSlot& slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts idle device copies, least recently used first, until `bytes` more
  // fit; false (and nothing evicted) when they cannot.
  bool MakeDeviceRoomLocked(int64_t bytes, const CacheSlot* except,
                            std::vector<std::shared_ptr<const void>>& released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool MakeHostRoomLocked(int64_t bytes, const CacheSlot* except,
                          std::vector<std::shared_ptr<const void>>& released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropDeviceLocked(CacheSlot& slot, std::vector<std::shared_ptr<const void>>& released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropHostLocked(CacheSlot& slot, std::vector<std::shared_ptr<const void>>& released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Tier TierLocked(const CacheSlot& slot) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Stats StatsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Brings the resident{} series and the tier gauges up to date.
  void PublishLocked(CacheSlot& slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishTiersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LoaderLoop() ABSL_LOCKS_EXCLUDED(mu_);

  const model::LlamaModel* const base_;
  const AdapterCacheOptions options_;
  metrics::ServerMetrics* const metrics_;  // may be null

  mutable absl::Mutex mu_;
  absl::flat_hash_set<CacheSlot*> slots_ ABSL_GUARDED_BY(mu_);
  std::deque<std::weak_ptr<CacheSlot>> load_queue_ ABSL_GUARDED_BY(mu_);
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;    // last_use_ ticks
  uint64_t changes_ ABSL_GUARDED_BY(mu_) = 0;  // bumped whenever room may have appeared
  int64_t device_used_ ABSL_GUARDED_BY(mu_) = 0, host_used_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t device_reserved_ ABSL_GUARDED_BY(mu_) = 0;
  Stats counters_ ABSL_GUARDED_BY(mu_);  // the counting fields only
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread loader_;
};

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_ADAPTER_CACHE_H_
