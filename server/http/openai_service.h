// The OpenAI-compatible HTTP API, vLLM's runtime LoRA endpoints, health and
// metrics, over the core.
#ifndef ADAPTERD_SERVER_HTTP_OPENAI_SERVICE_H_
#define ADAPTERD_SERVER_HTTP_OPENAI_SERVICE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "prometheus/registry.h"
#include "server/auth/call_authenticator.h"
#include "server/core/server_core.h"
#include "server/http/http_exchange.h"
#include "server/http/openai_request.h"
#include "server/metrics/http_metrics.h"

namespace adapterd::http {

struct OpenAiServiceOptions {
  // Who may call; null lets every caller in (in-process tests only).
  const auth::CallAuthenticator* auth = nullptr;
  // Served at GET /metrics; null answers 404 there.
  prometheus::Registry* registry = nullptr;
  metrics::HttpMetrics* metrics = nullptr;  // may be null
  OpenAiLimits limits;
  // A stream whose unsent output passes this many bytes is cancelled.
  int64_t max_pending_bytes = int64_t{1} << 20;
};

// Translates HTTP requests into ServerCore calls and their results back:
//
//   POST /v1/completions, POST /v1/chat/completions   inference role
//   POST /v1/classify (vLLM's classification API; `model` names a
//        sequence-classification adapter)         inference role
//   GET  /v1/models, GET /v1/models/{model}           inference role
//   POST /v1/load_lora_adapter, /v1/unload_lora_adapter   admin role
//   GET  /health (200 while serving, 503 once the drain has begun)
//   GET  /metrics (the Prometheus registry)
//
// `model` selects the adapter: the base model answers to the core's served
// model name (or to no model at all), and every other name is an adapter
// id; an unknown one is 404. Credentials are checked before the body is
// read: an "authorization: Bearer" header or a verified client
// certificate, with the roles of the gRPC API. Errors are OpenAI's error
// objects with the status of HttpStatusFor; the LoRA endpoints answer as
// vLLM does (plain-text success, 400 for a name already loaded). Every
// response carries x-request-id (the client's, when valid). Nothing here
// blocks an I/O thread on generation or loading; unloading runs inline.
// Thread-safe; the core, authenticator, registry and metrics must outlive
// it.
class OpenAiService final : public HttpHandler {
 public:
  OpenAiService(core::ServerCore* core, OpenAiServiceOptions options);

  void Handle(std::shared_ptr<HttpExchange> exchange) override;

 private:
  using Exchange = std::shared_ptr<HttpExchange>;
  void Completions(const Exchange& x, const std::string& request_id, ApiKind kind);
  void Classify(const Exchange& x, const std::string& request_id);
  void ListModels(const Exchange& x, const std::string& request_id);
  void GetModel(const Exchange& x, const std::string& request_id, const std::string& model);
  void LoadLora(const Exchange& x, const std::string& request_id);
  void UnloadLora(const Exchange& x, const std::string& request_id);
  void Health(const Exchange& x, const std::string& request_id);

  // The request's `model` as echoed in responses, and the adapter it names
  // ("" for the base, which answers to its served name or to no name).
  std::pair<std::string, std::string> ResolveModel(const std::string& model) const;
  absl::Status Authorize(const HttpRequest& request, auth::Role role) const;
  // Sends `response` with the request id, counting it under `route`.
  void Reply(const Exchange& x, const char* route, const std::string& request_id, HttpResponse response) const;

  core::ServerCore* const core_;
  const OpenAiServiceOptions options_;
};

// The request id: the client's x-request-id when it is 1-64 characters of
// [A-Za-z0-9._-], otherwise a fresh random one. Exposed for tests.
std::string ChooseRequestId(const HttpRequest& request);

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_OPENAI_SERVICE_H_
