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

// What a request asks of the model. A classification request is prefill
// only: it runs its prompt, in the same steps as every other row, and ends
// with its adapter's classification head applied to the last prompt token
// (ResultSink::OnScores) instead of sampling.
enum class RequestKind { kGenerate, kClassify };

struct GenerationRequest {
  std::string id;  // for logs and metadata
  RequestKind kind = RequestKind::kGenerate;
  std::vector<int64_t> prompt;
  // Ignored by classification requests.
  SamplingParams sampling;
  absl::Time deadline = absl::InfiniteFuture();
  // The request's one handle on its adapter; null for the base model. The
  // engine holds it until the request has finished and drops it before the
  // sink hears of the finish.
  std::shared_ptr<model::AdapterLease> adapter;
};

// The most tokens `r` may generate: none for a classification request.
inline int64_t MaxNewTokens(const GenerationRequest& r) {
  return r.kind == RequestKind::kClassify ? 0 : r.sampling.max_new_tokens;
}

enum class FinishReason { kLength, kStop, kCancelled, kError };

// A classification request that got its scores finishes with kLength.
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
  // A classification request's raw head output (float32, one per label),
  // once, right before OnFinish.
  virtual void OnScores(std::span<const float> scores) {}
  virtual void OnFinish(const Finish& finish) = 0;
  // Asked right after each OnTokens: true ends the request there, as a stop
  // token would (FinishReason::kStop). For stop conditions the engine
  // cannot see, such as stop strings in the text.
  virtual bool StopRequested() const { return false; }
};

}  // namespace adapterd::engine

#endif  // ADAPTERD_SERVER_ENGINE_REQUEST_H_
