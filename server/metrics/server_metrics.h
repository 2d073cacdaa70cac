// Every Prometheus metric family adapterd exports, defined in one place.
#ifndef ADAPTERD_SERVER_METRICS_SERVER_METRICS_H_
#define ADAPTERD_SERVER_METRICS_SERVER_METRICS_H_

#include <string_view>

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
  explicit ServerMetrics(prometheus::Registry& registry);
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // One finished RPC: `rpc` is the method name, `code` the gRPC status name.
  void RecordRpc(std::string_view rpc, std::string_view code);

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

 private:
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
};

}  // namespace adapterd::metrics

#endif  // ADAPTERD_SERVER_METRICS_SERVER_METRICS_H_
