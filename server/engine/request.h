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

namespace adapterd::model {
class AdapterWeights;
}  // namespace adapterd::model

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

// One request's claim on an adapter that may not be resident yet. Creating
// the lease asks for the adapter to be brought in; while it lives, the
// adapter's weights, once resident, stay resident. The engine polls
// weights() from its thread and leaves the request waiting, without holding
// back other requests, until they are there. Implementations are
// thread-safe.
class AdapterLease {
 public:
  virtual ~AdapterLease() = default;
  // Known without the weights: a prompt-tuning adapter's virtual tokens.
  virtual int64_t num_virtual_tokens() const = 0;
  // The weights (the same pointer from the first non-null answer on, valid
  // for the lease's life), null while they are being brought in, or the
  // error that ended the attempt.
  virtual absl::StatusOr<const model::AdapterWeights*> weights() = 0;
};

struct GenerationRequest {
  std::string id;  // for logs and metadata
  std::vector<int64_t> prompt;
  SamplingParams sampling;
  absl::Time deadline = absl::InfiniteFuture();
  // The adapter to run through; null for the base model. `adapter_ref` keeps
  // it alive until the request is finished and dropped by the engine.
  const model::AdapterWeights* adapter = nullptr;
  std::shared_ptr<const void> adapter_ref;
  // Instead of `adapter`: weights brought in on demand. The engine sets
  // `adapter` from it when the request joins the batch.
  std::shared_ptr<AdapterLease> lease;
  std::string adapter_id;  // for metrics; empty for the base model
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
};

}  // namespace adapterd::engine

#endif  // ADAPTERD_SERVER_ENGINE_REQUEST_H_
