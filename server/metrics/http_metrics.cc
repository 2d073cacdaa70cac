#include "server/metrics/http_metrics.h"

#include <string>

namespace adapterd::metrics {

HttpMetrics::HttpMetrics(prometheus::Registry& r)
    : requests_(&prometheus::BuildCounter()
                     .Name("adapterd_http_requests_total")
                     .Help("Answered HTTP requests by route and status code")
                     .Register(r)),
      connections_(&prometheus::BuildGauge()
                        .Name("adapterd_http_connections")
                        .Help("Open HTTP connections by listener")
                        .Register(r)),
      aborted_(&prometheus::BuildCounter()
                    .Name("adapterd_http_aborted_total")
                    .Help("HTTP exchanges abandoned before their answer was complete, by reason")
                    .Register(r)) {}

void HttpMetrics::RecordRequest(std::string_view route, int status) {
  requests_->Add({{"route", std::string(route)}, {"status", std::to_string(status)}}).Increment();
}

prometheus::Gauge& HttpMetrics::connections(std::string_view listener) {
  return connections_->Add({{"listener", std::string(listener)}});
}

void HttpMetrics::RecordAbort(std::string_view reason) {
  aborted_->Add({{"reason", std::string(reason)}}).Increment();
}

}  // namespace adapterd::metrics
