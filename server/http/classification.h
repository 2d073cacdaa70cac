// One POST /v1/classify request in flight: its core requests and the answer
// to the client.
#ifndef ADAPTERD_SERVER_HTTP_CLASSIFICATION_H_
#define ADAPTERD_SERVER_HTTP_CLASSIFICATION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/core/classify_request.h"
#include "server/core/server_core.h"
#include "server/engine/engine.h"
#include "server/http/http_exchange.h"
#include "server/http/openai_request.h"
#include "server/metrics/http_metrics.h"

namespace adapterd::http {

// What a Classification needs from the service that starts it.
struct ClassificationContext {
  core::ServerCore* core = nullptr;
  metrics::HttpMetrics* metrics = nullptr;  // may be null
  std::string model;       // as the client named it, echoed in the response
  std::string adapter_id;  // "" = the base model (which the core refuses)
  std::string request_id;
  int64_t created = 0;  // unix seconds
};

// The response body for `results` (one per input, in order), in vLLM's
// classification shape: {"id", "object": "list", "created", "model",
// "data": [{"index", "label", "probs", "num_classes", "logits", "labels"}],
// "usage"}. `label` is the most probable label's name. Exposed for tests.
std::string ClassifyResponseJson(const ClassificationContext& ctx, const std::vector<core::ClassifyResult>& results);

// Submits every input of a /v1/classify request to the core
// (ServerCore::Classify: each is a prefill-only row in the engine's shared
// steps) and answers the exchange with one JSON object once all have their
// scores, or with the first error (in input order). A client that goes away
// cancels every input. All the logic (tokenizing, pooling, which adapters
// classify) is the core's; this only translates.
//
// Shared by the core's sinks and the abandonment callback; it lives until
// the last of them lets go. Thread-safe: results and handles are guarded by
// mu_; the answer is formatted on the connection's I/O thread.
class Classification final : public std::enable_shared_from_this<Classification> {
 public:
  // Starts `request` and answers `exchange`, at once when an input cannot
  // be submitted (an unknown model is 404 on `model`). Call on the
  // exchange's I/O thread.
  static void Run(ClassificationContext context, ClassifyApiRequest request, std::shared_ptr<HttpExchange> exchange);

  Classification(ClassificationContext context, ClassifyApiRequest request, std::shared_ptr<HttpExchange> exchange);

 private:
  class InputSink;

  absl::Status Submit() ABSL_LOCKS_EXCLUDED(mu_);
  void OnResult(size_t index, absl::StatusOr<core::ClassifyResult> result) ABSL_LOCKS_EXCLUDED(mu_);
  void CancelAll() ABSL_LOCKS_EXCLUDED(mu_);
  // The whole response (or the first error), on the I/O thread.
  void RespondWhole() ABSL_LOCKS_EXCLUDED(mu_);
  void Reply(HttpResponse response) const;

  const ClassificationContext ctx_;
  ClassifyApiRequest request_;  // inputs are moved out by Submit
  const std::shared_ptr<HttpExchange> exchange_;
  const size_t num_inputs_;

  absl::Mutex mu_;
  std::vector<std::shared_ptr<engine::RequestHandle>> handles_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::StatusOr<core::ClassifyResult>> results_ ABSL_GUARDED_BY(mu_);
  size_t finished_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // Submit failed and its error was the answer: later results are dropped.
  bool answered_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_CLASSIFICATION_H_
