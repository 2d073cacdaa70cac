// One OpenAI completion or chat request in flight: its core requests, the
// output they produce, and the answer to the client.
#ifndef ADAPTERD_SERVER_HTTP_GENERATION_H_
#define ADAPTERD_SERVER_HTTP_GENERATION_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/core/generate_request.h"
#include "server/core/server_core.h"
#include "server/engine/engine.h"
#include "server/http/http_exchange.h"
#include "server/http/openai_format.h"
#include "server/http/openai_request.h"
#include "server/metrics/http_metrics.h"

namespace adapterd::http {

// What a Generation needs from the service that starts it.
struct GenerationContext {
  core::ServerCore* core = nullptr;
  metrics::HttpMetrics* metrics = nullptr;  // may be null
  std::string model;       // as the client named it, echoed in responses
  std::string adapter_id;  // "" = the base model
  std::string request_id;
  int64_t created = 0;  // unix seconds
  // A stream whose unsent output passes this many bytes (its client reads
  // too slowly) is cancelled and its connection closed.
  int64_t max_pending_bytes = int64_t{1} << 20;
};

// Submits every choice of an OpenAI request to the core (n per prompt) and
// answers the exchange: one JSON object once every choice has finished,
// or a stream of server-sent events.
//
// Streaming is pull-based. The engine thread only appends each choice's
// tokens, logprobs and text to that choice's pending output and wakes the
// connection; the connection pulls when it can write, and everything that
// arrived since the previous pull leaves as one event per choice. So a
// client that reads slowly gets fewer, larger events, and the output waiting
// for it is bounded by what the request can generate; past
// max_pending_bytes (about: text bytes plus 32 per token) the request is
// cancelled and the connection closed. A client that goes away, or a write
// that stalls past the listener's write timeout, abandons the exchange,
// which cancels every choice: the engine drops them at its next step and
// frees their KV blocks.
//
// Shared by the exchange (as its body), the core's sinks and the
// abandonment callback; it lives until the last of them lets go.
// Thread-safe: output and handles are guarded by mu_; the formatter and
// the stream's progress belong to the connection's I/O thread, which alone
// pulls and formats.
class Generation final : public BodyStream, public std::enable_shared_from_this<Generation> {
 public:
  // Starts `request` and answers `exchange`, at once when a choice cannot
  // be submitted (an unknown model is 404 on `model`). Call on the
  // exchange's I/O thread.
  static void Run(GenerationContext context, OpenAiRequest request, std::shared_ptr<HttpExchange> exchange);

  Generation(GenerationContext context, OpenAiRequest request, std::shared_ptr<HttpExchange> exchange);

  PullResult Pull(std::string* out) override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  class ChoiceSink;
  struct Choice {
    std::shared_ptr<engine::RequestHandle> handle;
    // Output not yet pulled (stream), or all of it (whole response).
    std::vector<int64_t> tokens;
    std::vector<float> logprobs;
    std::string text;
    bool finished = false;
    bool finish_taken = false;  // the finish has been pulled
    core::GenerateFinish finish;
  };
  // A choice's output as one pull takes it.
  struct Taken {
    size_t index = 0;
    std::vector<int64_t> tokens;
    std::vector<float> logprobs;
    std::string text;
    std::optional<core::GenerateFinish> finish;
  };

  absl::Status Submit() ABSL_LOCKS_EXCLUDED(mu_);
  void OnChunk(size_t index, const core::GenerateChunk& chunk) ABSL_LOCKS_EXCLUDED(mu_);
  void OnFinish(size_t index, const core::GenerateFinish& finish) ABSL_LOCKS_EXCLUDED(mu_);
  void CancelAll() ABSL_LOCKS_EXCLUDED(mu_);
  // The whole response (or the first error), on the I/O thread.
  void RespondWhole() ABSL_LOCKS_EXCLUDED(mu_);
  // Formats what a pull took; true once the stream has ended.
  bool Format(std::vector<Taken>& taken, std::string* out);
  Usage TotalUsage() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const GenerationContext ctx_;
  const OpenAiRequest request_;
  const std::shared_ptr<HttpExchange> exchange_;
  const size_t num_choices_;

  absl::Mutex mu_;
  std::vector<Choice> choices_ ABSL_GUARDED_BY(mu_);
  int64_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t finished_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool overflowed_ ABSL_GUARDED_BY(mu_) = false;

  // The connection's I/O thread only.
  OpenAiFormatter formatter_;
  bool started_ = false;  // the stream's first pull (chat role events) is done
  bool ended_ = false;
};

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_GENERATION_H_
