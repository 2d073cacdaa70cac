#include "server/metrics/server_metrics.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace adapterd::metrics {
namespace {

using prometheus::Histogram;

// Latency buckets from 1 ms to about 65 s, doubling.
Histogram::BucketBoundaries LatencyBuckets() {
  Histogram::BucketBoundaries b;
  for (double v = 0.001; v < 70; v *= 2) b.push_back(v);
  return b;
}

Histogram::BucketBoundaries CountBuckets() {
  Histogram::BucketBoundaries b;
  for (double v = 1; v <= 8192; v *= 2) b.push_back(v);
  return b;
}

Histogram* AddHistogram(prometheus::Registry& r, const std::string& name, const std::string& help,
                        const Histogram::BucketBoundaries& buckets) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({}, buckets);
}

}  // namespace

ServerMetrics::ServerMetrics(prometheus::Registry& r, int max_adapter_labels)
    : max_adapter_labels_(max_adapter_labels),
      requests_(&prometheus::BuildCounter()
                     .Name("adapterd_requests_total")
                     .Help("Finished RPCs by method and gRPC status code")
                     .Register(r)),
      ttft_(AddHistogram(r, "adapterd_time_to_first_token_seconds",
                         "Time from arrival to the first generated token", LatencyBuckets())),
      tpot_(AddHistogram(r, "adapterd_time_per_output_token_seconds",
                         "Time between consecutive generated tokens of a request",
                         LatencyBuckets())),
      e2e_(AddHistogram(r, "adapterd_request_duration_seconds",
                        "Time from arrival to the last generated token", LatencyBuckets())),
      queue_time_(AddHistogram(r, "adapterd_queue_time_seconds",
                               "Time a request waited before its first forward step",
                               LatencyBuckets())),
      batch_size_(AddHistogram(r, "adapterd_batch_size", "Sequences per forward step",
                               CountBuckets())),
      tokens_per_step_(AddHistogram(r, "adapterd_tokens_per_step", "Tokens per forward step",
                                    CountBuckets())),
      prompt_tokens_(&prometheus::BuildCounter()
                          .Name("adapterd_prompt_tokens_total")
                          .Help("Prompt tokens of admitted requests")
                          .Register(r)
                          .Add({})),
      generated_tokens_(&prometheus::BuildCounter()
                             .Name("adapterd_generated_tokens_total")
                             .Help("Generated tokens")
                             .Register(r)
                             .Add({})),
      running_(&prometheus::BuildGauge()
                    .Name("adapterd_requests_running")
                    .Help("Requests in the running batch")
                    .Register(r)
                    .Add({})),
      waiting_(&prometheus::BuildGauge()
                    .Name("adapterd_requests_waiting")
                    .Help("Requests queued for admission")
                    .Register(r)
                    .Add({})),
      kv_utilization_(&prometheus::BuildGauge()
                           .Name("adapterd_kv_cache_utilization")
                           .Help("Fraction of KV cache blocks in use (0..1)")
                           .Register(r)
                           .Add({})),
      preemptions_(&prometheus::BuildCounter()
                        .Name("adapterd_preemptions_total")
                        .Help("Sequences preempted (KV blocks freed, recomputed later)")
                        .Register(r)
                        .Add({})),
      adapter_requests_(&prometheus::BuildCounter()
                             .Name("adapterd_adapter_requests_total")
                             .Help("Finished requests by adapter (bounded: see --metrics_max_adapter_labels)")
                             .Register(r)),
      adapter_tokens_(&prometheus::BuildCounter()
                           .Name("adapterd_adapter_generated_tokens_total")
                           .Help("Generated tokens by adapter (bounded like adapter_requests_total)")
                           .Register(r)),
      adapter_load_failures_(&prometheus::BuildCounter()
                                  .Name("adapterd_adapter_load_failures_total")
                                  .Help("Adapter loads that failed, by gRPC status code")
                                  .Register(r)),
      adapter_load_seconds_(AddHistogram(r, "adapterd_adapter_load_seconds",
                                         "Time to read, validate and build an adapter",
                                         LatencyBuckets())),
      adapters_loaded_(&prometheus::BuildGauge()
                            .Name("adapterd_adapters_loaded")
                            .Help("Adapters ready to serve")
                            .Register(r)
                            .Add({})),
      adapter_bytes_(&prometheus::BuildGauge()
                          .Name("adapterd_adapter_bytes")
                          .Help("Bytes held by adapter tensors, including unloaded adapters "
                                "that running requests still use")
                          .Register(r)
                          .Add({})),
      adapter_running_(&prometheus::BuildGauge()
                            .Name("adapterd_adapter_requests_running")
                            .Help("Running requests by adapter (bounded labels; base = \"base\")")
                            .Register(r)),
      adapter_waiting_(&prometheus::BuildGauge()
                            .Name("adapterd_adapter_requests_waiting")
                            .Help("Waiting requests by adapter (bounded labels; base = \"base\")")
                            .Register(r)),
      lora_requests_info_(&prometheus::BuildGauge()
                               .Name("vllm:lora_requests_info")
                               .Help("vLLM-compatible: adapters of running and waiting requests as "
                                     "comma-separated labels; value = last update (unix seconds)")
                               .Register(r)),
      tier_adapters_(&prometheus::BuildGauge()
                          .Name("adapterd_adapter_tier_adapters")
                          .Help("Adapters resident in each tier (device, host, disk)")
                          .Register(r)),
      tier_bytes_(&prometheus::BuildGauge()
                       .Name("adapterd_adapter_tier_bytes")
                       .Help("Bytes used in each tier: device = adapter tensors, host and disk = "
                             "adapter files")
                       .Register(r)),
      tier_budget_(&prometheus::BuildGauge()
                        .Name("adapterd_adapter_tier_budget_bytes")
                        .Help("Byte budget of each tier (0 = no limit)")
                        .Register(r)),
      cache_hits_(&prometheus::BuildCounter()
                       .Name("adapterd_adapter_cache_hits_total")
                       .Help("Requests whose adapter was on the device tier when they arrived")
                       .Register(r)
                       .Add({})),
      cache_misses_(&prometheus::BuildCounter()
                         .Name("adapterd_adapter_cache_misses_total")
                         .Help("Requests that waited for their adapter, by the tier it came from")
                         .Register(r)),
      evictions_(&prometheus::BuildCounter()
                      .Name("adapterd_adapter_evictions_total")
                      .Help("Idle adapters evicted to make room, by the tier they left")
                      .Register(r)),
      tier_load_seconds_(&prometheus::BuildHistogram()
                              .Name("adapterd_adapter_tier_load_seconds")
                              .Help("On-demand loads onto the device tier, by source tier")
                              .Register(r)),
      waiting_on_load_(&prometheus::BuildGauge()
                            .Name("adapterd_adapter_load_waiting_requests")
                            .Help("Requests waiting for their adapter to be loaded")
                            .Register(r)
                            .Add({})),
      resident_(&prometheus::BuildGauge()
                     .Name("adapterd_adapter_resident")
                     .Help("1 for each adapter at its highest tier (device, host, disk); bounded "
                           "labels, adapter=\"other\" counts the rest")
                     .Register(r)) {}

void ServerMetrics::SetTierUsage(std::string_view tier, int64_t adapters, int64_t bytes,
                                 int64_t budget_bytes) {
  const std::string t(tier);
  tier_adapters_->Add({{"tier", t}}).Set(static_cast<double>(adapters));
  tier_bytes_->Add({{"tier", t}}).Set(static_cast<double>(bytes));
  tier_budget_->Add({{"tier", t}}).Set(static_cast<double>(budget_bytes));
}

void ServerMetrics::RecordAdapterCacheHit() { cache_hits_->Increment(); }

void ServerMetrics::RecordAdapterCacheMiss(std::string_view source_tier) {
  cache_misses_->Add({{"source_tier", std::string(source_tier)}}).Increment();
}

void ServerMetrics::RecordAdapterEviction(std::string_view from_tier) {
  evictions_->Add({{"from_tier", std::string(from_tier)}}).Increment();
}

void ServerMetrics::RecordAdapterTierLoad(std::string_view source_tier, double seconds) {
  tier_load_seconds_->Add({{"source_tier", std::string(source_tier)}}, LatencyBuckets()).Observe(seconds);
}

void ServerMetrics::MoveAdapterResidency(const std::string& adapter_id, std::string_view from_tier,
                                         std::string_view to_tier) {
  if (from_tier == to_tier) return;
  const std::string label = AdapterLabel(adapter_id);
  if (!from_tier.empty()) resident_->Add({{"adapter", label}, {"tier", std::string(from_tier)}}).Decrement();
  if (!to_tier.empty()) resident_->Add({{"adapter", label}, {"tier", std::string(to_tier)}}).Increment();
}

std::string ServerMetrics::AdapterLabel(const std::string& adapter_id) {
  if (adapter_id.empty()) return "base";
  absl::MutexLock lock(&mu_);
  if (labelled_adapters_.contains(adapter_id)) return adapter_id;
  if (static_cast<int>(labelled_adapters_.size()) < max_adapter_labels_) {
    labelled_adapters_.insert(adapter_id);
    return adapter_id;
  }
  return "other";
}

void ServerMetrics::RecordAdapterRequest(const std::string& adapter_id, int64_t generated_tokens) {
  const std::string label = AdapterLabel(adapter_id);
  adapter_requests_->Add({{"adapter", label}}).Increment();
  adapter_tokens_->Add({{"adapter", label}}).Increment(static_cast<double>(generated_tokens));
}

void ServerMetrics::SetAdapterActivity(
    const std::map<std::string, std::pair<int64_t, int64_t>>& by_adapter, int64_t max_batch_size) {
  std::map<std::string, std::pair<int64_t, int64_t>> by_label;
  std::string running, waiting;
  for (const auto& [id, counts] : by_adapter) {
    auto& sum = by_label[AdapterLabel(id)];
    sum.first += counts.first;
    sum.second += counts.second;
    if (id.empty()) continue;
    if (counts.first > 0) absl::StrAppend(&running, running.empty() ? "" : ",", id);
    if (counts.second > 0) absl::StrAppend(&waiting, waiting.empty() ? "" : ",", id);
  }
  absl::MutexLock lock(&mu_);
  for (const auto& [label, counts] : last_activity_) {
    if (!by_label.contains(label)) by_label[label] = {0, 0};  // keep the series, at zero
  }
  if (by_label == last_activity_) return;
  for (const auto& [label, counts] : by_label) {
    adapter_running_->Add({{"adapter", label}}).Set(static_cast<double>(counts.first));
    adapter_waiting_->Add({{"adapter", label}}).Set(static_cast<double>(counts.second));
  }
  last_activity_ = by_label;
  // One series at a time: the previous label combination is removed.
  if (lora_info_current_ != nullptr) lora_requests_info_->Remove(lora_info_current_);
  lora_info_current_ = &lora_requests_info_->Add({{"max_lora", std::to_string(max_batch_size)},
                                                  {"running_lora_adapters", running},
                                                  {"waiting_lora_adapters", waiting}});
  lora_info_current_->SetToCurrentTime();
}

void ServerMetrics::RecordAdapterLoadFailure(std::string_view reason) {
  adapter_load_failures_->Add({{"reason", std::string(reason)}}).Increment();
}

void ServerMetrics::RecordRpc(std::string_view rpc, std::string_view code) {
  requests_->Add({{"rpc", std::string(rpc)}, {"code", std::string(code)}}).Increment();
}

}  // namespace adapterd::metrics
