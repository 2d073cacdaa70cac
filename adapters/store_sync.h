// Keeps one server's adapters in step with an adapter store that several
// servers share.
#ifndef ADAPTERD_ADAPTERS_STORE_SYNC_H_
#define ADAPTERD_ADAPTERS_STORE_SYNC_H_

#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "adapters/adapter_registry.h"
#include "adapters/adapter_store.h"
#include "server/metrics/adapter_metrics.h"

namespace adapterd::adapters {

// What one pass changed.
struct SyncChanges {
  int unloaded = 0;  // deleted from the store by another server
  int replaced = 0;  // a newer version written by another server
};

// A StoreSync should be created after the registry's start-up restore and
// destroyed before the registry and the store. Every `period` it reads the
// stamp of each store entry (manifests only) and compares it with the stamp
// of each ready adapter the registry holds from the store: an adapter whose
// entry is gone is unloaded here (running requests finish), and one whose
// entry has a different stamp is replaced by that version (the old one
// serves until the new one is ready). Adapters not in the store (the demo
// adapters) are left alone. Entries this server does not hold are not
// loaded here: the registry loads them when a request names one
// (AdapterRegistry::LookupOrLoad), which is also where a request checks the
// store. Each pass also deletes superseded version directories older than
// the store's grace period. Thread-safe; owns one thread.
class StoreSync {
 public:
  // `metrics` may be null. A zero `period` starts no thread (SyncOnce only).
  StoreSync(AdapterRegistry* registry, AdapterStore* store, absl::Duration period,
            metrics::AdapterMetrics* metrics);
  ~StoreSync();  // stops the thread and joins it
  StoreSync(const StoreSync&) = delete;
  StoreSync& operator=(const StoreSync&) = delete;

  // One pass, on the caller's thread. Replacements it starts finish on the
  // registry's loader thread.
  SyncChanges SyncOnce();

 private:
  AdapterRegistry* const registry_;
  AdapterStore* const store_;
  const absl::Duration period_;
  metrics::AdapterMetrics* const metrics_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_STORE_SYNC_H_
