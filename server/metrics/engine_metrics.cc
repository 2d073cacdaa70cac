#include "server/metrics/engine_metrics.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/metrics/metric_buckets.h"

namespace adapterd::metrics {

namespace {

// One vLLM-named gauge with vLLM's model_name and engine labels.
prometheus::Gauge* VllmGauge(prometheus::Registry& r, const char* name, const char* help,
                             const std::string& model_name) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(r).Add(
      {{"model_name", model_name}, {"engine", "0"}});
}

}  // namespace

namespace {

// One part of adapterd_step_seconds_total (the family is registered once).
prometheus::Counter* StepPart(prometheus::Registry& r, const std::string& part) {
  return &prometheus::BuildCounter()
              .Name("adapterd_step_seconds_total")
              .Help("Time of forward steps by part: gemm (the base's matrix products and LM head), attention "
                    "(RoPE, KV cache writes and reads), adapters (adapter deltas), sampling, other (the rest: "
                    "scheduling, norms, activations, emitting tokens)")
              .Register(r)
              .Add({{"part", part}});
}

}  // namespace

EngineMetrics::EngineMetrics(prometheus::Registry& r, AdapterLabels* labels, const std::string& model_name)
    : labels_(labels),
      ttft_(AddHistogram(r, "adapterd_time_to_first_token_seconds",
                         "Time from arrival to the first generated token", LatencyBuckets())),
      tpot_(AddHistogram(r, "adapterd_time_per_output_token_seconds",
                         "Time between consecutive generated tokens of a request", LatencyBuckets())),
      e2e_(AddHistogram(r, "adapterd_request_duration_seconds",
                        "Time from arrival to the last generated token", LatencyBuckets())),
      queue_time_(AddHistogram(r, "adapterd_queue_time_seconds",
                               "Time a request waited before its first forward step", LatencyBuckets())),
      batch_size_(AddHistogram(r, "adapterd_batch_size", "Sequences per forward step", CountBuckets())),
      tokens_per_step_(AddHistogram(r, "adapterd_tokens_per_step", "Tokens per forward step", CountBuckets())),
      prompt_tokens_(AddCounter(r, "adapterd_prompt_tokens_total", "Prompt tokens of admitted requests")),
      generated_tokens_(AddCounter(r, "adapterd_generated_tokens_total", "Generated tokens")),
      running_(AddGauge(r, "adapterd_requests_running", "Requests in the running batch")),
      waiting_(AddGauge(r, "adapterd_requests_waiting", "Requests queued for admission")),
      kv_utilization_(AddGauge(r, "adapterd_kv_cache_utilization", "Fraction of KV cache blocks in use (0..1)")),
      preemptions_(AddCounter(r, "adapterd_preemptions_total",
                              "Sequences preempted (KV blocks freed, recomputed later)")),
      prefix_queried_(AddCounter(r, "adapterd_prefix_cache_queried_tokens_total",
                                 "Prompt tokens looked up in the prefix cache")),
      prefix_hits_(AddCounter(r, "adapterd_prefix_cache_hit_tokens_total",
                              "Prompt tokens whose keys and values the prefix cache held")),
      vllm_prefix_queries_(&prometheus::BuildCounter()
                                .Name("vllm:prefix_cache_queries_total")
                                .Help("vLLM-compatible: prefix cache queries, in queried tokens")
                                .Register(r)
                                .Add({{"model_name", model_name}, {"engine", "0"}})),
      vllm_prefix_hits_(&prometheus::BuildCounter()
                             .Name("vllm:prefix_cache_hits_total")
                             .Help("vLLM-compatible: prefix cache hits, in hit tokens")
                             .Register(r)
                             .Add({{"model_name", model_name}, {"engine", "0"}})),
      step_gemm_(StepPart(r, "gemm")),
      step_attention_(StepPart(r, "attention")),
      step_adapters_(StepPart(r, "adapters")),
      step_sampling_(StepPart(r, "sampling")),
      step_other_(StepPart(r, "other")),
      steps_(AddCounter(r, "adapterd_steps_total", "Forward steps run")),
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
      model_name_(model_name),
      vllm_running_(VllmGauge(r, "vllm:num_requests_running",
                              "vLLM-compatible: requests in the running batch (as adapterd_requests_running)",
                              model_name)),
      vllm_waiting_(VllmGauge(r, "vllm:num_requests_waiting",
                              "vLLM-compatible: requests waiting for admission (as adapterd_requests_waiting)",
                              model_name)),
      vllm_kv_usage_(VllmGauge(r, "vllm:kv_cache_usage_perc",
                               "vLLM-compatible: fraction of KV cache blocks in use, 1 = 100% "
                               "(as adapterd_kv_cache_utilization)",
                               model_name)),
      vllm_gpu_cache_usage_(VllmGauge(r, "vllm:gpu_cache_usage_perc",
                                      "vLLM-compatible, deprecated alias of vllm:kv_cache_usage_perc for "
                                      "routers that still read it",
                                      model_name)),
      cache_config_info_(&prometheus::BuildGauge()
                              .Name("vllm:cache_config_info")
                              .Help("vLLM-compatible: information about the KV cache configuration (value 1)")
                              .Register(r)) {}

void EngineMetrics::SetSchedulerState(int64_t running, int64_t waiting, double kv_usage) {
  running_->Set(static_cast<double>(running));
  waiting_->Set(static_cast<double>(waiting));
  kv_utilization_->Set(kv_usage);
  vllm_running_->Set(static_cast<double>(running));
  vllm_waiting_->Set(static_cast<double>(waiting));
  vllm_kv_usage_->Set(kv_usage);
  vllm_gpu_cache_usage_->Set(kv_usage);
}

void EngineMetrics::RecordStep(double total, double gemm, double attention, double adapters, double sampling) {
  step_gemm_->Increment(gemm);
  step_attention_->Increment(attention);
  step_adapters_->Increment(adapters);
  step_sampling_->Increment(sampling);
  step_other_->Increment(std::max(0.0, total - gemm - attention - adapters - sampling));
  steps_->Increment();
}

void EngineMetrics::SetPrefixCache(int64_t queried_tokens, int64_t hit_tokens) {
  const double queried = static_cast<double>(queried_tokens - last_prefix_queried_);
  const double hits = static_cast<double>(hit_tokens - last_prefix_hits_);
  last_prefix_queried_ = queried_tokens;
  last_prefix_hits_ = hit_tokens;
  if (queried > 0) {
    prefix_queried_->Increment(queried);
    vllm_prefix_queries_->Increment(queried);
  }
  if (hits > 0) {
    prefix_hits_->Increment(hits);
    vllm_prefix_hits_->Increment(hits);
  }
}

void EngineMetrics::SetCacheConfig(int64_t block_size, int64_t num_blocks, const std::string& cache_dtype,
                                   bool prefix_caching) {
  cache_config_info_
      ->Add({{"engine", "0"},
             {"block_size", std::to_string(block_size)},
             {"num_gpu_blocks", std::to_string(num_blocks)},
             {"num_cpu_blocks", "0"},
             {"cache_dtype", cache_dtype},
             {"enable_prefix_caching", prefix_caching ? "True" : "False"},
             {"sliding_window", "None"}})
      .Set(1);
}

void EngineMetrics::SetAdapterActivity(const std::map<std::string, std::pair<int64_t, int64_t>>& by_adapter,
                                       int64_t max_batch_size) {
  std::map<std::string, std::pair<int64_t, int64_t>> by_label;
  std::string running, waiting;
  for (const auto& [id, counts] : by_adapter) {
    auto& sum = by_label[labels_->Label(id)];
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

}  // namespace adapterd::metrics
