// Every Prometheus metric family adapterd exports, defined in one place.
#ifndef ADAPTERD_SERVER_METRICS_SERVER_METRICS_H_
#define ADAPTERD_SERVER_METRICS_SERVER_METRICS_H_

#include <cstdint>
#include <map>
#include <utility>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace adapterd::metrics {

// Registers the families in a registry owned by the caller, and is handed to
// the layers that record into them (no globals). Label values come from
// closed sets (RPC method names, gRPC status codes), so cardinality is
// bounded. Thread-safe: prometheus-cpp metrics are atomic and families lock
// internally.
class ServerMetrics {
 public:
  // Per-adapter series get their own `adapter` label for the first
  // `max_adapter_labels` adapter ids seen; later ids share adapter="other",
  // and the base model is adapter="base". That bounds the series count.
  explicit ServerMetrics(prometheus::Registry& registry, int max_adapter_labels = 100);
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // One finished RPC: `rpc` is the method name, `code` the gRPC status name.
  void RecordRpc(std::string_view rpc, std::string_view code);

  // One finished request through `adapter_id` ("" = base model).
  void RecordAdapterRequest(const std::string& adapter_id, int64_t generated_tokens)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Running and waiting requests per adapter id ("" = base), replacing the
  // previous values: adapterd_adapter_requests_{running,waiting}{adapter}
  // (bounded labels) and vLLM's router-compatible vllm:lora_requests_info.
  void SetAdapterActivity(const std::map<std::string, std::pair<int64_t, int64_t>>& by_adapter,
                          int64_t max_batch_size) ABSL_LOCKS_EXCLUDED(mu_);
  // A load that failed; `reason` is a gRPC status code name.
  void RecordAdapterLoadFailure(std::string_view reason);

  // Residency tiers ("device", "host", "disk"): adapters and bytes in one,
  // and its budget (0 = none): adapterd_adapter_tier_{adapters,bytes,budget_bytes}{tier}.
  void SetTierUsage(std::string_view tier, int64_t adapters, int64_t bytes, int64_t budget_bytes);
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
                            std::string_view to_tier) ABSL_LOCKS_EXCLUDED(mu_);
  prometheus::Gauge& requests_waiting_on_load() { return *waiting_on_load_; }

  prometheus::Histogram& adapter_load_seconds() { return *adapter_load_seconds_; }
  prometheus::Gauge& adapters_loaded() { return *adapters_loaded_; }
  prometheus::Gauge& adapter_bytes() { return *adapter_bytes_; }
  prometheus::Histogram& time_to_first_token() { return *ttft_; }
  prometheus::Histogram& time_per_output_token() { return *tpot_; }
  prometheus::Histogram& request_duration() { return *e2e_; }
  prometheus::Histogram& queue_time() { return *queue_time_; }
  prometheus::Histogram& batch_size() { return *batch_size_; }
  prometheus::Histogram& tokens_per_step() { return *tokens_per_step_; }
  prometheus::Counter& prompt_tokens() { return *prompt_tokens_; }
  prometheus::Counter& generated_tokens() { return *generated_tokens_; }
  prometheus::Gauge& running_requests() { return *running_; }
  prometheus::Gauge& waiting_requests() { return *waiting_; }
  prometheus::Gauge& kv_cache_utilization() { return *kv_utilization_; }
  prometheus::Counter& preemptions() { return *preemptions_; }

 private:
  std::string AdapterLabel(const std::string& adapter_id) ABSL_LOCKS_EXCLUDED(mu_);

  const int max_adapter_labels_;
  absl::Mutex mu_;
  absl::flat_hash_set<std::string> labelled_adapters_ ABSL_GUARDED_BY(mu_);
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* tpot_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_time_;
  prometheus::Histogram* batch_size_;
  prometheus::Histogram* tokens_per_step_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generated_tokens_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* kv_utilization_;
  prometheus::Counter* preemptions_;
  prometheus::Family<prometheus::Counter>* adapter_requests_;
  prometheus::Family<prometheus::Counter>* adapter_tokens_;
  prometheus::Family<prometheus::Counter>* adapter_load_failures_;
  prometheus::Histogram* adapter_load_seconds_;
  prometheus::Gauge* adapters_loaded_;
  prometheus::Gauge* adapter_bytes_;
  prometheus::Family<prometheus::Gauge>* adapter_running_;
  prometheus::Family<prometheus::Gauge>* adapter_waiting_;
  prometheus::Family<prometheus::Gauge>* lora_requests_info_;
  prometheus::Family<prometheus::Gauge>* tier_adapters_;
  prometheus::Family<prometheus::Gauge>* tier_bytes_;
  prometheus::Family<prometheus::Gauge>* tier_budget_;
  prometheus::Counter* cache_hits_;
  prometheus::Family<prometheus::Counter>* cache_misses_;
  prometheus::Family<prometheus::Counter>* evictions_;
  prometheus::Family<prometheus::Histogram>* tier_load_seconds_;
  prometheus::Gauge* waiting_on_load_;
  prometheus::Family<prometheus::Gauge>* resident_;
  prometheus::Gauge* lora_info_current_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<std::string, std::pair<int64_t, int64_t>> last_activity_ ABSL_GUARDED_BY(mu_);
};

}  // namespace adapterd::metrics

#endif  // ADAPTERD_SERVER_METRICS_SERVER_METRICS_H_
