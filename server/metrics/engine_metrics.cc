#include "server/metrics/engine_metrics.h"

#include "absl/strings/str_cat.h"
#include "server/metrics/metric_buckets.h"

namespace adapterd::metrics {

EngineMetrics::EngineMetrics(prometheus::Registry& r, AdapterLabels* labels)
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
                               .Register(r)) {}

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
