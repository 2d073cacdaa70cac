// The HTTP transport's metric families.
#ifndef ADAPTERD_SERVER_METRICS_HTTP_METRICS_H_
#define ADAPTERD_SERVER_METRICS_HTTP_METRICS_H_

#include <string_view>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace adapterd::metrics {

// Registers the HTTP listeners' families in a registry owned by the caller.
// Label values come from closed sets: route names the handler defines,
// HTTP status codes it sends, listener names ("api", "metrics") and abort
// reasons. Thread-safe.
class HttpMetrics {
 public:
  explicit HttpMetrics(prometheus::Registry& registry);
  HttpMetrics(const HttpMetrics&) = delete;
  HttpMetrics& operator=(const HttpMetrics&) = delete;

  // One answered request: adapterd_http_requests_total{route,status}.
  void RecordRequest(std::string_view route, int status);
  // adapterd_http_connections{listener}: open connections.
  prometheus::Gauge& connections(std::string_view listener);
  // adapterd_http_aborted_total{reason}: exchanges that ended before their
  // answer was complete: "client_closed", "slow_client" (a write stalled
  // past the write timeout, or a stream's pending output passed its cap),
  // "shutdown".
  void RecordAbort(std::string_view reason);

 private:
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Gauge>* connections_;
  prometheus::Family<prometheus::Counter>* aborted_;
};

}  // namespace adapterd::metrics

#endif  // ADAPTERD_SERVER_METRICS_HTTP_METRICS_H_
