#include "adapters/store_sync.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/log/log.h"

namespace adapterd::adapters {

StoreSync::StoreSync(AdapterRegistry* registry, AdapterStore* store, absl::Duration period,
                     metrics::AdapterMetrics* metrics)
    : registry_(registry), store_(store), period_(period), metrics_(metrics) {
  if (period_ <= absl::ZeroDuration()) return;
  thread_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(period_)) SyncOnce();
  });
}

StoreSync::~StoreSync() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

SyncChanges StoreSync::SyncOnce() {
  SyncChanges changes;
  absl::flat_hash_map<std::string, std::string> stamps;
  for (ManifestEntry& m : store_->Manifests()) stamps.emplace(std::move(m.id), std::move(m.stamp));
  for (const AdapterInfo& info : registry_->List()) {
    if (info.state != AdapterState::kReady || info.store_stamp.empty()) continue;
    auto it = stamps.find(info.id);
    if (it == stamps.end()) {
      absl::Status st = registry_->Unload(info.id, /*keep_on_disk=*/false, /*delete_from_store=*/false);
      if (st.ok()) {
        ++changes.unloaded;
        if (metrics_ != nullptr) metrics_->RecordStoreSyncChange("unloaded");
        LOG(INFO) << "adapter store sync: " << info.id << " was unloaded by another server; unloaded here";
      }
      continue;
    }
    if (it->second == info.store_stamp) continue;
    absl::StatusOr<StoredAdapter> stored = store_->Find(info.id);
    if (!stored.ok()) {
      LOG(WARNING) << "adapter store sync: " << info.id << " changed but cannot be read: " << stored.status();
      continue;
    }
    const std::string id = info.id;
    absl::Status st = registry_->StartLoad(
        id, std::move(stored->source), /*replace=*/true,
        [id](absl::StatusOr<AdapterInfo> r) {
          if (!r.ok()) LOG(WARNING) << "adapter store sync: the new version of " << id << " failed: " << r.status();
        },
        /*persist=*/false, stored->pinned, stored->stamp);
    if (st.ok()) {
      ++changes.replaced;
      if (metrics_ != nullptr) metrics_->RecordStoreSyncChange("replaced");
      LOG(INFO) << "adapter store sync: " << id << " was replaced by another server; loading the new version";
    }
  }
  store_->SweepSuperseded();
  return changes;
}

}  // namespace adapterd::adapters
