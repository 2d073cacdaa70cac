// The adapter lifecycle's metric families: registrations, tiers and loads.
#ifndef ADAPTERD_SERVER_METRICS_ADAPTER_METRICS_H_
#define ADAPTERD_SERVER_METRICS_ADAPTER_METRICS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics/adapter_labels.h"

namespace adapterd::metrics {

// Registers the adapter families in a registry owned by the caller. The
// registry and the residency cache record tiers and loads; the core records
// registrations and per-adapter requests. Per-adapter series take their
// labels from `labels`, which must outlive this object. Label values
// otherwise come from closed sets (tier names, gRPC status code names).
// Thread-safe: prometheus-cpp metrics are atomic and families lock
// internally; no lock of this object's is held across a call out.
class AdapterMetrics {
 public:
  AdapterMetrics(prometheus::Registry& registry, AdapterLabels* labels);
  AdapterMetrics(const AdapterMetrics&) = delete;
  AdapterMetrics& operator=(const AdapterMetrics&) = delete;

  // One finished request through `adapter_id` ("" = base model).
  void RecordAdapterRequest(const std::string& adapter_id, int64_t generated_tokens);
  // A load that failed; `reason` is a status code name.
  void RecordAdapterLoadFailure(std::string_view reason);
  // A shared adapter store: a load of an adapter this server did not hold
  // ("loaded" or "failed"), a request that waited for one, and a change a
  // sync applied ("unloaded" or "replaced").
  void RecordStoreLoad(std::string_view result);
  void RecordStoreMiss();
  void RecordStoreSyncChange(std::string_view change);
  // Residency tiers ("device", "host", "disk"): adapters and bytes in one,
  // and its budget (0 = none): adapterd_adapter_tier_{adapters,bytes,budget_bytes}{tier}.
  void SetTierUsage(std::string_view tier, int64_t adapters, int64_t bytes, int64_t budget_bytes);
  // The LoRA slot pool (--adapter_slots): slots held by adapters and slots
  // free: adapterd_adapter_slots{state="used"|"free"}.
  void SetSlotUsage(int64_t used, int64_t total);
  // A request found its adapter on the device tier (hit), or had to wait for
  // it to come from `source_tier` (miss).
  void RecordAdapterCacheHit();
  void RecordAdapterCacheMiss(std::string_view source_tier);
  // An idle adapter left `from_tier` to make room.
  void RecordAdapterEviction(std::string_view from_tier);
  // An on-demand load onto the device tier from `source_tier`.
  void RecordAdapterTierLoad(std::string_view source_tier, double seconds);
  // Moves one adapter's adapterd_adapter_resident{adapter, tier} series from
  // `from_tier` to `to_tier` ("" = none). Adapters past the label bound
  // share adapter="other", whose value is then a count.
  void MoveAdapterResidency(const std::string& adapter_id, std::string_view from_tier,
                            std::string_view to_tier);

  prometheus::Gauge& requests_waiting_on_load() { return *waiting_on_load_; }
  prometheus::Histogram& adapter_load_seconds() { return *adapter_load_seconds_; }
  prometheus::Gauge& adapters_loaded() { return *adapters_loaded_; }
  prometheus::Gauge& adapter_bytes() { return *adapter_bytes_; }

 private:
  AdapterLabels* const labels_;
  prometheus::Family<prometheus::Counter>* adapter_requests_;
  prometheus::Family<prometheus::Counter>* adapter_tokens_;
  prometheus::Family<prometheus::Counter>* adapter_load_failures_;
  prometheus::Family<prometheus::Counter>* store_loads_;
  prometheus::Counter* store_misses_;
  prometheus::Family<prometheus::Counter>* store_sync_changes_;
  prometheus::Histogram* adapter_load_seconds_;
  prometheus::Gauge* adapters_loaded_;
  prometheus::Gauge* adapter_bytes_;
  prometheus::Family<prometheus::Gauge>* tier_adapters_;
  prometheus::Family<prometheus::Gauge>* tier_bytes_;
  prometheus::Family<prometheus::Gauge>* tier_budget_;
  prometheus::Family<prometheus::Gauge>* slots_;
  prometheus::Counter* cache_hits_;
  prometheus::Family<prometheus::Counter>* cache_misses_;
  prometheus::Family<prometheus::Counter>* evictions_;
  prometheus::Family<prometheus::Histogram>* tier_load_seconds_;
  prometheus::Gauge* waiting_on_load_;
  prometheus::Family<prometheus::Gauge>* resident_;
};

}  // namespace adapterd::metrics

#endif  // ADAPTERD_SERVER_METRICS_ADAPTER_METRICS_H_
