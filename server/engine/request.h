// What the engine is asked to do and how it reports back. Transport-neutral:
// the RPC layer translates its protos into these types.
#ifndef ADAPTERD_SERVER_ENGINE_REQUEST_H_
#define ADAPTERD_SERVER_ENGINE_REQUEST_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/model/adapter_lease.h"

namespace adapterd::engine {

struct SamplingParams {
  int64_t max_new_tokens = 16;
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 0 or 1 = off
  uint64_t seed = 0;         // 0 = random
  std::vector<int64_t> stop_token_ids;
  bool ignore_eos = false;
  bool return_logprobs = false;
};

struct GenerationRequest {
  std::string id;  // for logs and metadata
  std::vector<int64_t> prompt;
  SamplingParams sampling;
  absl::Time deadline = absl::InfiniteFuture();
  // The request's one handle on its adapter; null for the base model. The
  // engine holds it until the request has finished and drops it before the
  // sink hears of the finish.
  std::shared_ptr<model::AdapterLease> adapter;
};

enum class FinishReason { kLength, kStop, kCancelled, kError };

struct Finish {
  FinishReason reason = FinishReason::kLength;
  // OK for kLength/kStop; CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE or
  // INTERNAL otherwise.
  absl::Status status;
  int64_t prompt_tokens = 0;      // the caller's prompt
  int64_t completion_tokens = 0;
  int64_t virtual_tokens = 0;     // a prompt-tuning adapter's, not in prompt_tokens
};

// Receives one request's output. The engine calls OnTokens zero or more
// times, then OnFinish exactly once, all from the engine thread: they must
// not block. After OnFinish the engine drops its reference.
class ResultSink {
 public:
  virtual ~ResultSink() = default;
  // `logprobs` is empty unless sampling.return_logprobs.
  virtual void OnTokens(std::span<const int64_t> tokens, std::span<const float> logprobs) = 0;
  virtual void OnFinish(const Finish& finish) = 0;
  // Asked right after each OnTokens: true ends the request there, as a stop
  // token would (FinishReason::kStop). For stop conditions the engine
  // cannot see, such as stop strings in the text.
  virtual bool StopRequested() const { return false; }
};

}  // namespace adapterd::engine

#endif  // ADAPTERD_SERVER_ENGINE_REQUEST_H_
