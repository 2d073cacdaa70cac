// The engine's metric families: latency, batching, queue and KV cache.
#ifndef ADAPTERD_SERVER_METRICS_ENGINE_METRICS_H_
#define ADAPTERD_SERVER_METRICS_ENGINE_METRICS_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics/adapter_labels.h"

namespace adapterd::metrics {

// Registers the engine's families in a registry owned by the caller; the
// engine records into them from its thread. The per-adapter series take
// their labels from `labels`, which must outlive this object. Beside
// adapterd's own families it exports, under vLLM's names and meanings, the
// gauges that routers read (vllm:num_requests_running/_waiting,
// vllm:kv_cache_usage_perc and its older alias vllm:gpu_cache_usage_perc,
// vllm:lora_requests_info, vllm:cache_config_info;
// see docs/metrics.md), labelled model_name=`model_name` and engine="0" as
// vLLM labels them. Thread-safe: prometheus-cpp metrics are atomic, and the
// activity series are replaced under this object's own (leaf) lock.
class EngineMetrics {
 public:
  EngineMetrics(prometheus::Registry& registry, AdapterLabels* labels, const std::string& model_name = "");
  EngineMetrics(const EngineMetrics&) = delete;
  EngineMetrics& operator=(const EngineMetrics&) = delete;

  // Running and waiting requests per adapter id ("" = base), replacing the
  // previous values: adapterd_adapter_requests_{running,waiting}{adapter}
  // (bounded labels) and vLLM's router-compatible vllm:lora_requests_info.
  void SetAdapterActivity(const std::map<std::string, std::pair<int64_t, int64_t>>& by_adapter,
                          int64_t max_batch_size) ABSL_LOCKS_EXCLUDED(mu_);

  // The scheduler's load after a step: running and waiting requests and
  // the fraction (0..1) of KV cache blocks in use, in adapterd's gauges and
  // vLLM's.
  void SetSchedulerState(int64_t running, int64_t waiting, double kv_usage);
  // vllm:cache_config_info, an info gauge (value 1) whose labels describe
  // the KV cache; set once, when the cache exists.
  void SetCacheConfig(int64_t block_size, int64_t num_blocks, const std::string& cache_dtype,
                      bool prefix_caching = false);
  // The prefix cache's running totals of prompt tokens looked up and found
  // (adapterd_prefix_cache_{queried,hit}_tokens_total and vLLM's
  // vllm:prefix_cache_{queries,hits}_total); the counters advance by the
  // difference from the last call. Called from the engine thread only.
  void SetPrefixCache(int64_t queried_tokens, int64_t hit_tokens);
  // One step that ran a forward pass: its total time and the parts of it
  // spent in the base's matrix products, attention, adapter work and
  // sampling (adapterd_step_seconds_total{part}; "other" is the rest).
  void RecordStep(double total, double gemm, double attention, double adapters, double sampling);

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
  AdapterLabels* const labels_;
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
  prometheus::Counter* prefix_queried_;
  prometheus::Counter* prefix_hits_;
  prometheus::Counter* vllm_prefix_queries_;
  prometheus::Counter* vllm_prefix_hits_;
  // adapterd_step_seconds_total{part}: gemm, attention, adapters, sampling, other.
  prometheus::Counter* step_gemm_;
  prometheus::Counter* step_attention_;
  prometheus::Counter* step_adapters_;
  prometheus::Counter* step_sampling_;
  prometheus::Counter* step_other_;
  prometheus::Counter* steps_;
  int64_t last_prefix_queried_ = 0;  // engine thread only
  int64_t last_prefix_hits_ = 0;
  prometheus::Family<prometheus::Gauge>* adapter_running_;
  prometheus::Family<prometheus::Gauge>* adapter_waiting_;
  prometheus::Family<prometheus::Gauge>* lora_requests_info_;
  const std::string model_name_;
  prometheus::Gauge* vllm_running_;
  prometheus::Gauge* vllm_waiting_;
  prometheus::Gauge* vllm_kv_usage_;
  prometheus::Gauge* vllm_gpu_cache_usage_;
  prometheus::Family<prometheus::Gauge>* cache_config_info_;

  absl::Mutex mu_;
  prometheus::Gauge* lora_info_current_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<std::string, std::pair<int64_t, int64_t>> last_activity_ ABSL_GUARDED_BY(mu_);
};

}  // namespace adapterd::metrics

#endif  // ADAPTERD_SERVER_METRICS_ENGINE_METRICS_H_
