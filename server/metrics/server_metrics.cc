#include "server/metrics/server_metrics.h"

#include <string>

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

ServerMetrics::ServerMetrics(prometheus::Registry& r)
    : requests_(&prometheus::BuildCounter()
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
                           .Add({})) {}

void ServerMetrics::RecordRpc(std::string_view rpc, std::string_view code) {
  requests_->Add({{"rpc", std::string(rpc)}, {"code", std::string(code)}}).Increment();
}

}  // namespace adapterd::metrics
