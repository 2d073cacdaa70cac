// The Prometheus scrape endpoint on the HTTP listener.
#ifndef ADAPTERD_SERVER_HTTP_METRICS_SERVICE_H_
#define ADAPTERD_SERVER_HTTP_METRICS_SERVICE_H_

#include <memory>

#include "prometheus/registry.h"
#include "server/http/http_exchange.h"
#include "server/metrics/http_metrics.h"

namespace adapterd::http {

// The registry in Prometheus' text exposition format.
HttpResponse MetricsResponse(prometheus::Registry& registry);

// Answers GET /metrics with the registry, and anything else with 404 (other
// paths) or 405 (other methods), for the metrics listener
// (--metrics_listen). Thread-safe; the registry and metrics must outlive it.
class MetricsService final : public HttpHandler {
 public:
  MetricsService(prometheus::Registry* registry, metrics::HttpMetrics* metrics)
      : registry_(registry), metrics_(metrics) {}
  void Handle(std::shared_ptr<HttpExchange> exchange) override;

 private:
  prometheus::Registry* const registry_;
  metrics::HttpMetrics* const metrics_;  // may be null
};

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_METRICS_SERVICE_H_
