// The adapters a server holds, and their lifecycle.
#ifndef ADAPTERD_ADAPTERS_ADAPTER_REGISTRY_H_
#define ADAPTERD_ADAPTERS_ADAPTER_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "adapters/adapter_cache.h"
#include "adapters/adapter_loader.h"
#include "adapters/adapter_source.h"
#include "adapters/adapter_store.h"
#include "server/model/adapter_weights.h"
#include "server/metrics/adapter_metrics.h"
#include "server/model/adapter_lease.h"
#include "server/model/llama_model.h"

namespace adapterd::adapters {

// loading -> ready -> unloading -> gone, or loading -> failed. Only ready
// adapters serve requests; failed and gone ones leave no entry behind. An
// unloading adapter is invisible to requests and listings, but its id stays
// taken until its store entry is deleted.
enum class AdapterState { kLoading, kReady, kUnloading, kGone, kFailed };
std::string_view AdapterStateName(AdapterState s);

struct AdapterInfo {
  std::string id;
  AdapterState state = AdapterState::kLoading;
  AdapterSummary summary;  // kind and shape parameters
  std::string source;  // the directory, or "upload"
  int64_t bytes = 0;
  absl::Time loaded_at;
  absl::Duration load_duration;
  int64_t requests_served = 0;
  int64_t tokens_generated = 0;
  Tier tier = Tier::kDisk;  // where it is now (ready adapters)
  bool pinned = false;
  // The adapter store's stamp of the entry version this is (empty when the
  // adapter is not in the store, e.g. the demo adapters).
  std::string store_stamp;
};

// A ready (registered) adapter version. Its weights live in the
// AdapterCache's tiers; requests take a Lease(), which brings them to the
// device tier on demand and keeps them there while the request runs, so
// unloading or evicting never pulls weights from under a running sequence.
// Immutable apart from its counters; thread-safe.
class Adapter {
 public:
  Adapter(AdapterInfo info, std::shared_ptr<CacheSlot> slot, AdapterCache* cache);
  Adapter(const Adapter&) = delete;
  Adapter& operator=(const Adapter&) = delete;

  const std::string& id() const { return info_.id; }
  // For one request; see AdapterCache::Lease.
  std::shared_ptr<model::AdapterLease> Lease() const { return cache_->Lease(slot_); }
  // Counts one finished request and the tokens it generated.
  void RecordRequest(int64_t tokens) const;
  AdapterInfo info() const;
  // Its kind and shape parameters; fixed for the version's life.
  const AdapterSummary& summary() const { return info_.summary; }
  CacheSlot& slot() const { return *slot_; }

 private:
  const AdapterInfo info_;
  const std::shared_ptr<CacheSlot> slot_;
  AdapterCache* const cache_;
  mutable std::atomic<int64_t> requests_{0}, tokens_{0};
};

// Maps adapter ids to adapters. Loads run one at a time on the registry's
// own loader thread, so the engine keeps stepping while an adapter is parsed,
// validated and built; Lookup() (one per request) takes a reader lock and
// never waits for a load. A replacing load keeps the old adapter serving
// until the new one is ready, then swaps them atomically. Thread-safe. The
// base model must outlive the registry. With a store, every load that
// succeeds is recorded in it before it is acknowledged, and Unload deletes
// the record before the id can be loaded again, so a store never loses an
// acknowledged load; the store must outlive the registry. An upload's slot
// reads back from its own version directory in the store, never from a
// directory that a later version replaces. The registry owns the
// AdapterCache that places ready adapters in tiers within `cache`'s budgets.
// Lock order: this registry's mutex, then the cache's; the store is called
// with neither held.
class AdapterRegistry {
 public:
  explicit AdapterRegistry(const model::LlamaModel* base, AdapterStore* store = nullptr,
                           AdapterCacheOptions cache = {}, metrics::AdapterMetrics* metrics = nullptr);
  ~AdapterRegistry();  // finishes queued loads, then joins the loader thread

  // Adapter ids are 1-128 characters of [A-Za-z0-9._-], starting with a letter
  // or digit.
  static absl::Status ValidateId(const std::string& id);

  using LoadDone = std::function<void(absl::StatusOr<AdapterInfo>)>;
  // Checks the id (INVALID_ARGUMENT, ALREADY_EXISTS unless `replace`,
  // FAILED_PRECONDITION while the id is loading or unloading) and queues the load; `done`
  // runs on the loader thread with the ready adapter's info or the error.
  // A failed load leaves the registry as it was. `persist` = false keeps the
  // load out of the store (for start-up's restore and the demo adapters).
  // `pin` keeps the adapter on the device tier (RESOURCE_EXHAUSTED when the
  // tier cannot make room).
  // `store_stamp` names the store entry version that a load with `persist`
  // false reads (see AdapterInfo::store_stamp). With a store, a load that
  // is not a `replace` also fails with ALREADY_EXISTS when the store has
  // the id (another server sharing it wrote it).
  absl::Status StartLoad(std::string id, AdapterSource source, bool replace, LoadDone done,
                         bool persist = true, bool pin = false, std::string store_stamp = "")
      ABSL_LOCKS_EXCLUDED(mu_);
  // Stops new requests from finding the adapter at once (NOT_FOUND); running
  // requests keep their reference. Returns once the store entry is deleted;
  // until then a load of the same id is refused. NOT_FOUND if absent,
  // FAILED_PRECONDITION while it is still loading. With `keep_on_disk` the adapter instead stays
  // registered and leaves the device and host tiers (once no request uses
  // it); the next request loads it again from disk. FAILED_PRECONDITION
  // then when it has no copy on disk or is pinned. With a shared store, an
  // id this server does not hold but the store does is deleted from the
  // store. `delete_from_store` false unloads it here only (a sync applying
  // another server's unload).
  absl::Status Unload(const std::string& id, bool keep_on_disk = false, bool delete_from_store = true)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The ready adapter `id`: NOT_FOUND if unknown, UNAVAILABLE while its first
  // load is in progress.
  absl::StatusOr<std::shared_ptr<const Adapter>> Lookup(const std::string& id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Lookup(), but with a shared store an id this server does not hold and
  // the store does is loaded from it (waiting for a load already under way
  // too), and returned once ready. Waits at most until `deadline`
  // (DEADLINE_EXCEEDED). NOT_FOUND when the store has no such entry either,
  // or its load failed (the message says why).
  absl::StatusOr<std::shared_ptr<const Adapter>> LookupOrLoad(const std::string& id, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<AdapterInfo> Get(const std::string& id) const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<AdapterInfo> List() const ABSL_LOCKS_EXCLUDED(mu_);
  int64_t ready_count() const ABSL_LOCKS_EXCLUDED(mu_);
  // Bytes of adapter tensors on the device tier, including unloaded
  // adapters that running requests still hold.
  int64_t live_bytes() const { return cache_.GetStats().device_bytes; }
  const AdapterCache& cache() const { return cache_; }
  AdapterStore* store() const { return store_; }

 private:
  struct Entry {
    AdapterState state = AdapterState::kLoading;
    std::shared_ptr<const Adapter> adapter;  // set while ready
    bool replacing = false;                  // a new version is loading
    std::string source;
  };
  struct Task {
    std::string id;
    AdapterSource source;
    LoadDone done;
    bool persist = true;
    bool pin = false;
    bool replace = false;
    std::string store_stamp;
  };
  void LoaderLoop() ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::shared_ptr<const Adapter>> Build(const Task& task);

  const model::LlamaModel* const base_;
  AdapterStore* const store_;
  metrics::AdapterMetrics* const metrics_;  // may be null
  AdapterCache cache_;
  mutable absl::Mutex mu_ ABSL_ACQUIRED_BEFORE(cache_.mu_);
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread loader_;  // runs LoaderLoop(); started and joined by the constructor and destructor
};

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_ADAPTER_REGISTRY_H_
