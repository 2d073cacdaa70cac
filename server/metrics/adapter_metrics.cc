#include "server/metrics/adapter_metrics.h"

#include "server/metrics/metric_buckets.h"

namespace adapterd::metrics {
namespace {

template <typename Builder>
auto* Family(Builder b, prometheus::Registry& r, const char* name, const char* help) {
  return &b.Name(name).Help(help).Register(r);
}

}  // namespace

AdapterMetrics::AdapterMetrics(prometheus::Registry& r, AdapterLabels* labels)
    : labels_(labels),
      adapter_requests_(Family(prometheus::BuildCounter(), r, "adapterd_adapter_requests_total",
                               "Finished requests by adapter (bounded: see --metrics_max_adapter_labels)")),
      adapter_tokens_(Family(prometheus::BuildCounter(), r, "adapterd_adapter_generated_tokens_total",
                             "Generated tokens by adapter (bounded like adapter_requests_total)")),
      adapter_load_failures_(Family(prometheus::BuildCounter(), r, "adapterd_adapter_load_failures_total",
                                    "Adapter loads that failed, by gRPC status code")),
      store_loads_(Family(prometheus::BuildCounter(), r, "adapterd_adapter_store_loads_total",
                          "Adapters loaded from the shared adapter store because a request named one this "
                          "server did not hold, by result (loaded, failed)")),
      store_misses_(AddCounter(r, "adapterd_adapter_store_misses_total",
                               "Requests whose adapter this server did not hold and that waited for it to "
                               "be loaded from the shared adapter store")),
      store_sync_changes_(Family(prometheus::BuildCounter(), r, "adapterd_adapter_store_sync_changes_total",
                                 "Changes made by other servers to the shared adapter store that this server "
                                 "applied, by change (unloaded, replaced)")),
      adapter_load_seconds_(AddHistogram(r, "adapterd_adapter_load_seconds",
                                         "Time to read, validate and build an adapter", LatencyBuckets())),
      adapters_loaded_(AddGauge(r, "adapterd_adapters_loaded", "Adapters ready to serve")),
      adapter_bytes_(AddGauge(r, "adapterd_adapter_bytes",
                              "Bytes held by adapter tensors, including unloaded adapters that running "
                              "requests still use")),
      tier_adapters_(Family(prometheus::BuildGauge(), r, "adapterd_adapter_tier_adapters",
                            "Adapters resident in each tier (device, host, disk)")),
      tier_bytes_(Family(prometheus::BuildGauge(), r, "adapterd_adapter_tier_bytes",
                         "Bytes used in each tier: device = adapter tensors, host and disk = adapter files")),
      tier_budget_(Family(prometheus::BuildGauge(), r, "adapterd_adapter_tier_budget_bytes",
                          "Byte budget of each tier (0 = no limit)")),
      slots_(Family(prometheus::BuildGauge(), r, "adapterd_adapter_slots",
                    "Slots of the LoRA slot pool (--adapter_slots), used or free")),
      cache_hits_(AddCounter(r, "adapterd_adapter_cache_hits_total",
                             "Requests whose adapter was on the device tier when they arrived")),
      cache_misses_(Family(prometheus::BuildCounter(), r, "adapterd_adapter_cache_misses_total",
                           "Requests that waited for their adapter, by the tier it came from")),
      evictions_(Family(prometheus::BuildCounter(), r, "adapterd_adapter_evictions_total",
                        "Idle adapters evicted to make room, by the tier they left")),
      tier_load_seconds_(Family(prometheus::BuildHistogram(), r, "adapterd_adapter_tier_load_seconds",
                                "On-demand loads onto the device tier, by source tier")),
      waiting_on_load_(AddGauge(r, "adapterd_adapter_load_waiting_requests",
                                "Requests waiting for their adapter to be loaded")),
      resident_(Family(prometheus::BuildGauge(), r, "adapterd_adapter_resident",
                       "1 for each adapter at its highest tier (device, host, disk); bounded labels, "
                       "adapter=\"other\" counts the rest")) {}

void AdapterMetrics::RecordAdapterRequest(const std::string& adapter_id, int64_t generated_tokens) {
  const std::string label = labels_->Label(adapter_id);
  adapter_requests_->Add({{"adapter", label}}).Increment();
  adapter_tokens_->Add({{"adapter", label}}).Increment(static_cast<double>(generated_tokens));
}

void AdapterMetrics::RecordAdapterLoadFailure(std::string_view reason) {
  adapter_load_failures_->Add({{"reason", std::string(reason)}}).Increment();
}

void AdapterMetrics::RecordStoreLoad(std::string_view result) {
  store_loads_->Add({{"result", std::string(result)}}).Increment();
}

void AdapterMetrics::RecordStoreMiss() { store_misses_->Increment(); }

void AdapterMetrics::RecordStoreSyncChange(std::string_view change) {
  store_sync_changes_->Add({{"change", std::string(change)}}).Increment();
}

void AdapterMetrics::SetTierUsage(std::string_view tier, int64_t adapters, int64_t bytes, int64_t budget_bytes) {
  const std::string t(tier);
  tier_adapters_->Add({{"tier", t}}).Set(static_cast<double>(adapters));
  tier_bytes_->Add({{"tier", t}}).Set(static_cast<double>(bytes));
  tier_budget_->Add({{"tier", t}}).Set(static_cast<double>(budget_bytes));
}

void AdapterMetrics::SetSlotUsage(int64_t used, int64_t total) {
  slots_->Add({{"state", "used"}}).Set(static_cast<double>(used));
  slots_->Add({{"state", "free"}}).Set(static_cast<double>(total - used));
}

void AdapterMetrics::RecordAdapterCacheHit() { cache_hits_->Increment(); }

void AdapterMetrics::RecordAdapterCacheMiss(std::string_view source_tier) {
  cache_misses_->Add({{"source_tier", std::string(source_tier)}}).Increment();
}

void AdapterMetrics::RecordAdapterEviction(std::string_view from_tier) {
  evictions_->Add({{"from_tier", std::string(from_tier)}}).Increment();
}

void AdapterMetrics::RecordAdapterTierLoad(std::string_view source_tier, double seconds) {
  tier_load_seconds_->Add({{"source_tier", std::string(source_tier)}}, LatencyBuckets()).Observe(seconds);
}

void AdapterMetrics::MoveAdapterResidency(const std::string& adapter_id, std::string_view from_tier,
                                          std::string_view to_tier) {
  if (from_tier == to_tier) return;
  const std::string label = labels_->Label(adapter_id);
  if (!from_tier.empty()) resident_->Add({{"adapter", label}, {"tier", std::string(from_tier)}}).Decrement();
  if (!to_tier.empty()) resident_->Add({{"adapter", label}, {"tier", std::string(to_tier)}}).Increment();
}

}  // namespace adapterd::metrics
