#include "server/http/metrics_service.h"

#include <utility>

#include "prometheus/text_serializer.h"
#include "server/http/http_error.h"

namespace adapterd::http {

HttpResponse MetricsResponse(prometheus::Registry& registry) {
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = prometheus::TextSerializer().Serialize(registry.Collect());
  return r;
}

void MetricsService::Handle(std::shared_ptr<HttpExchange> exchange) {
  const HttpRequest& req = exchange->request();
  HttpResponse r;
  if (req.path != "/metrics") {
    r = ErrorResponse(404, "not found: the metrics listener serves GET /metrics");
  } else if (req.method != "GET") {
    r = ErrorResponse(405, "GET only");
    r.headers.emplace_back("Allow", "GET");
  } else {
    r = MetricsResponse(*registry_);
  }
  if (metrics_ != nullptr) metrics_->RecordRequest(req.path == "/metrics" ? "metrics" : "other", r.status);
  exchange->Respond(std::move(r));
}

}  // namespace adapterd::http
