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
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/node_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "adapters/adapter_source.h"
#include "server/metrics/adapter_metrics.h"
#include "server/model/adapter_lease.h"
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
// last owner lets go, its bytes leave every tier. The fields here are fixed
// at creation; everything that changes is the cache's, under its mutex.
class CacheSlot : public std::enable_shared_from_this<CacheSlot> {
 public:
  ~CacheSlot();
  CacheSlot(const CacheSlot&) = delete;
  CacheSlot& operator=(const CacheSlot&) = delete;

  const std::string& id() const { return id_; }
  int64_t device_bytes() const { return device_bytes_; }
  int64_t host_bytes() const { return host_bytes_; }
  // Whether its weights go in a slot of the model's LoraSlotPool.
  bool wants_pool_slot() const { return wants_pool_slot_; }

 private:
  friend class AdapterCache;
  CacheSlot(AdapterCache* cache, std::string id, int64_t device_bytes, int64_t host_bytes,
            int64_t num_virtual_tokens, bool wants_pool_slot)
      : cache_(cache), id_(std::move(id)), device_bytes_(device_bytes), host_bytes_(host_bytes),
        num_virtual_tokens_(num_virtual_tokens), wants_pool_slot_(wants_pool_slot) {}

  AdapterCache* const cache_;
  const std::string id_;
  const int64_t device_bytes_;
  const int64_t host_bytes_;
  const int64_t num_virtual_tokens_;
  const bool wants_pool_slot_;
};

// Keeps registered adapters within byte budgets on the device tier and the
// host tier, and brings them in on demand.
//
// A request takes a lease (Lease()) before it is queued. A lease keeps its
// adapter from being evicted once resident; when the adapter is not on the
// device tier, taking the first lease queues one load on the cache's loader
// thread (a burst of requests for one cold adapter loads it once), from the
// host copy if there is one, else from disk. When the load ends, every lease
// waiting on it settles and its callback runs (see model::AdapterLease), so
// nothing polls. Loads never run on the engine thread and never wait behind
// registration loads. Room is made by evicting the least recently used idle
// adapters: device -> host (if the host copy is kept) -> disk. An adapter
// with a lease or a pin is never evicted. Reading from disk keeps a host
// copy when the host budget allows.
//
// With a LoraSlotPool on the model, slots are part of the device tier's
// room: a load of an adapter that fits a slot, when every slot is taken,
// first evicts the least recently used idle adapter that holds one. When
// running or pinned adapters hold every slot, it loads into tensors of its
// own instead of waiting. Registrations are built before they are inserted,
// so one that finds every slot taken keeps its own tensors until its next
// load.
//
// An adapter with no directory to read it back from (an upload without an
// adapter store, or one whose store entry is still being written) keeps its
// host copy for as long as it has no such directory. A lease whose adapter
// can never fit (the rest of the device budget is pinned) fails with
// RESOURCE_EXHAUSTED instead of waiting. While leases keep every device byte
// busy, a cold adapter waits for one to end: with a budget that holds few
// adapters, steady traffic to those can hold it back.
//
// Thread-safe. Lock order: the registry's mutex, then this cache's, then the
// metrics' leaf locks; lease callbacks run with no lock held. The base model,
// and metrics if given, must outlive it, and it must outlive every slot and
// lease it handed out.
class AdapterCache {
 public:
  AdapterCache(const model::LlamaModel* base, AdapterCacheOptions options,
               metrics::AdapterMetrics* metrics);
  ~AdapterCache();  // finishes the load in progress and joins the loader thread
  AdapterCache(const AdapterCache&) = delete;
  AdapterCache& operator=(const AdapterCache&) = delete;

  // Registers a newly built version. `weights` go to the device tier
  // (evicting idle adapters if needed; when nothing can make room they are
  // dropped and loaded again on first use) and `files` to the host tier when
  // they fit, or always while the slot has no `disk` copy. RESOURCE_EXHAUSTED
  // when the adapter is larger than the device budget, when `pinned` and the
  // device tier cannot make room, or when it has no `disk` copy and the host
  // tier cannot make room for its files.
  absl::StatusOr<std::shared_ptr<CacheSlot>> Insert(
      std::string id, std::shared_ptr<const model::AdapterWeights> weights,
      std::shared_ptr<const UploadSource> files, std::optional<DiskCopy> disk, bool pinned)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Gives a slot inserted without a disk copy the directory it can be read
  // back from from now on (an upload's store entry once it is written);
  // its host copy then becomes evictable.
  void AttachDisk(CacheSlot& slot, DiskCopy disk) ABSL_LOCKS_EXCLUDED(mu_);

  // A lease on `slot` for one request, named `adapter_id` (see the class
  // comment). Never waits.
  std::shared_ptr<model::AdapterLease> Lease(std::shared_ptr<CacheSlot> slot) ABSL_LOCKS_EXCLUDED(mu_);

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
    int64_t deferred_loads = 0;  // times the loader put a queued load off for lack of device room
    // The most bytes each tier ever held at once (device: with reservations).
    int64_t peak_device_bytes = 0, peak_host_bytes = 0;
  };
  Stats GetStats() const ABSL_LOCKS_EXCLUDED(mu_);
  const AdapterCacheOptions& options() const { return options_; }

 private:
  class LeaseImpl;
  friend class CacheSlot;
  friend class LeaseImpl;
  friend class AdapterRegistry;  // names mu_ in its lock order
  // What changes about a slot, kept by the cache under its mutex.
  struct SlotState {
    CacheSlot* slot = nullptr;
    std::optional<DiskCopy> disk;  // none: the host copy is the only one
    std::shared_ptr<const model::AdapterWeights> device;
    std::shared_ptr<const UploadSource> host;
    int64_t leases = 0;
    // Leases not settled yet, and the callback each asked for (if any).
    std::vector<std::pair<LeaseImpl*, absl::AnyInvocable<void()>>> waiting;
    bool pinned = false;
    bool loading = false;
    bool offload_when_idle = false;
    uint64_t last_use = 0;
    absl::Status load_error;
    Tier reported_tier = Tier::kDisk;  // what the resident{} series says
    bool reported = false;
  };
  // Callbacks of settled leases, run once the lock is released.
  using Settled = std::vector<absl::AnyInvocable<void()>>;

  SlotState& StateLocked(const CacheSlot& slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const SlotState& StateLocked(const CacheSlot& slot) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLease(LeaseImpl& lease) ABSL_LOCKS_EXCLUDED(mu_);
  void NotifyWhenSettled(LeaseImpl& lease, absl::AnyInvocable<void()> settled) ABSL_LOCKS_EXCLUDED(mu_);
  void Forget(CacheSlot* slot) ABSL_LOCKS_EXCLUDED(mu_);
  void QueueLoadLocked(SlotState& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Settles every waiting lease of `st`: with its device copy, or with `error`.
  void SettleWaitingLocked(SlotState& st, const absl::Status& error, Settled& settled)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts idle device copies, least recently used first, until `bytes` more
  // fit; false (and nothing evicted) when they cannot.
  bool MakeDeviceRoomLocked(int64_t bytes, const SlotState* except,
                            std::vector<std::shared_ptr<const void>>& released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pool slots no resident adapter holds and no load has reserved.
  int64_t FreePoolSlotsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts the least recently used idle adapter that holds a pool slot when
  // no slot is free; false when no slot is free and none can be freed.
  bool MakeSlotRoomLocked(const SlotState* except, std::vector<std::shared_ptr<const void>>& released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool MakeHostRoomLocked(int64_t bytes, const SlotState* except,
                          std::vector<std::shared_ptr<const void>>& released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropDeviceLocked(SlotState& st, std::vector<std::shared_ptr<const void>>& released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropHostLocked(SlotState& st, std::vector<std::shared_ptr<const void>>& released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Tier TierLocked(const SlotState& st) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Stats StatsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Brings the resident{} series and the tier gauges up to date.
  void PublishLocked(SlotState& st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishTiersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NotePeaksLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The first queued slot that room can be made for, its load reserved;
  // null when none can load now.
  std::shared_ptr<CacheSlot> NextLoadLocked(std::vector<std::shared_ptr<const void>>& released, Settled& settled)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLoadLocked(SlotState& st, absl::StatusOr<std::shared_ptr<const model::AdapterWeights>> built,
                        std::shared_ptr<const UploadSource> read, Tier source, double seconds,
                        std::vector<std::shared_ptr<const void>>& released, Settled& settled)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LoaderLoop() ABSL_LOCKS_EXCLUDED(mu_);

  const model::LlamaModel* const base_;
  const AdapterCacheOptions options_;
  metrics::AdapterMetrics* const metrics_;  // may be null

  mutable absl::Mutex mu_;
  absl::node_hash_map<const CacheSlot*, SlotState> slots_ ABSL_GUARDED_BY(mu_);
  // Slots with a load queued, oldest first; each holds a lease while queued.
  std::deque<std::weak_ptr<CacheSlot>> load_queue_ ABSL_GUARDED_BY(mu_);
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;    // last_use ticks
  uint64_t changes_ ABSL_GUARDED_BY(mu_) = 0;  // bumped whenever room may have appeared
  int64_t device_used_ ABSL_GUARDED_BY(mu_) = 0, host_used_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t device_reserved_ ABSL_GUARDED_BY(mu_) = 0;
  model::LoraSlotPool* const pool_;                  // the base's; null without one
  bool slot_reserved_ ABSL_GUARDED_BY(mu_) = false;  // by the load in progress
  Stats counters_ ABSL_GUARDED_BY(mu_);  // the counting fields only
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread loader_;  // runs LoaderLoop(); started and joined by the constructor and destructor
};

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_ADAPTER_CACHE_H_
