// The engine: one thread that owns the model, its KV cache and the batch.
#ifndef ADAPTERD_SERVER_ENGINE_ENGINE_H_
#define ADAPTERD_SERVER_ENGINE_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/engine/request.h"
#include "server/metrics/server_metrics.h"
#include "server/model/kv_cache.h"
#include "server/model/llama_model.h"

namespace adapterd::engine {

struct EngineOptions {
  int64_t max_batch_size = 64;        // sequences in one forward step
  int64_t max_tokens_per_step = 512;  // prompt chunks and decode tokens per step
  int64_t max_waiting = 1024;         // queued requests before RESOURCE_EXHAUSTED
  int64_t max_adapters_per_batch = 0; // distinct adapters running at once; 0 = no limit
  // Before a step, how long the engine may wait for adapters that newly
  // arrived requests are waiting on, as a fraction of the previous step's
  // time, so that a load which finishes early in the step joins it instead
  // of the next one. At most once per request, and only while sequences are
  // running; 0 never waits. Where loads and steps share the CPUs, the wait
  // gives the loader the CPU time it would take from the step anyway.
  double load_join_wait = 0.25;
  int64_t kv_block_size = 16;         // tokens per KV block
  int64_t kv_cache_bytes = int64_t{256} << 20;
  // Request limits; a request past one gets INVALID_ARGUMENT naming it.
  // 0 leaves prompt length and new tokens bounded by the context length only.
  int64_t max_prompt_tokens = 0;
  int64_t max_new_tokens = 0;
  int64_t max_stop_token_ids = 64;
};

// Checks a request against a model and the request limits (token ids,
// lengths, sampling values). Errors are INVALID_ARGUMENT naming the request
// field or the limit's flag. Pure; safe from any thread.
absl::Status ValidateRequest(const GenerationRequest& request, const model::ModelConfig& config,
                             const EngineOptions& options);

// Lets the submitter of a request cancel it. Thread-safe.
class RequestHandle {
 public:
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

// Runs generation requests with iteration-level batching: at every step,
// finished sequences leave, waiting ones join, prompts are processed in
// chunks under a per-step token budget, and decode tokens of all running
// sequences go through the model together.
//
// Submit() and Shutdown() are thread-safe. Everything that touches the model
// or the KV cache happens on the engine's own thread, which calls the
// ResultSinks.
//
// Scheduling policy: requests are admitted first come, first served, while
// batch slots and KV blocks for their known tokens are free. Each step takes
// one decode token from every running sequence first, then prompt chunks up
// to the step's token budget: each prompt in progress first gets an equal
// share of what is left (at least one KV block's worth), then the rest goes
// in arrival order. A long prompt is spread over several steps, never stalls
// decoding, and cannot hold back a short prompt that arrives behind it. KV blocks are reserved as
// sequences grow; when the pool runs dry, the most recently arrived running
// sequence is preempted (its blocks are freed and it is recomputed later,
// ahead of younger requests), so the oldest request always progresses.
// Adapters play no part in the order: rows of any mix of adapters share a step.
// Two exceptions skip a waiting request without holding back the ones
// behind it: its adapter is still being brought in (a lease without weights
// yet), or admitting it would put more than max_adapters_per_batch distinct
// adapters in the batch. A step may start up to load_join_wait of a step late
// while a new request's adapter is being brought in (once per request).
class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<model::LlamaModel> model,
                                                        const EngineOptions& options,
                                                        metrics::ServerMetrics* metrics);
  // Shuts down with no grace period.
  ~Engine();

  // Checks a request against the model (token ids, lengths, sampling values).
  // Errors are INVALID_ARGUMENT naming the request field.
  absl::Status Validate(const GenerationRequest& request) const;

  // Queues a request. Errors: INVALID_ARGUMENT (see Validate),
  // RESOURCE_EXHAUSTED when the waiting queue is full or the request could
  // never fit in the KV cache, UNAVAILABLE once shutdown has begun.
  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(GenerationRequest request,
                                                        std::shared_ptr<ResultSink> sink)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Stops accepting requests, lets accepted ones finish until `grace` has
  // passed, then ends the rest with UNAVAILABLE and joins the engine thread.
  // Idempotent.
  void Shutdown(absl::Duration grace) ABSL_LOCKS_EXCLUDED(mu_);
  // Shutdown without the join: from now on Submit() gives UNAVAILABLE, and
  // accepted requests have until `grace` has passed. Returns at once.
  void BeginShutdown(absl::Duration grace) ABSL_LOCKS_EXCLUDED(mu_);
  // After BeginShutdown(): waits until every accepted request has ended
  // (finished, or cut off when the grace ran out) and the engine thread has
  // left its loop, or until `deadline`. Returns whether it has.
  bool AwaitStopped(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  const model::ModelConfig& model_config() const { return model_->config(); }
  // The base model, for read-only use (adapter validation) on other threads.
  const model::LlamaModel* model() const { return model_.get(); }

  // A snapshot for tests and logs.
  struct Stats {
    int64_t running = 0;
    int64_t waiting = 0;
    int64_t kv_free_blocks = 0;
    int64_t kv_total_blocks = 0;
    int64_t preemptions = 0;
    // Steps that waited for a new request's adapter, and the requests whose
    // adapter arrived within such a wait (see EngineOptions::load_join_wait).
    int64_t load_join_waits = 0;
    int64_t load_joins = 0;
  };
  Stats GetStats() const;

 private:
  struct Sequence;
  Engine(std::unique_ptr<model::LlamaModel> model, std::unique_ptr<model::KvCache> kv,
         const EngineOptions& options, metrics::ServerMetrics* metrics);
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  void Step();
  void DropFinishedOrCancelled(bool shutdown_expired);
  void Admit();
  // Waits (bounded by options_.load_join_wait) for the adapters of waiting
  // requests not checked before that are still being brought in.
  void WaitForJoiningLoads();
  void Preempt(Sequence* victim);
  // Reserves blocks so `seq` covers `tokens` positions, preempting the newest
  // sequences as needed (possibly `seq` itself, which then holds no blocks).
  void EnsureBlocks(Sequence* seq, int64_t tokens);
  void FinishSequence(Sequence& seq, FinishReason reason, absl::Status status);
  void PublishStats();

  const std::unique_ptr<model::LlamaModel> model_;
  const std::unique_ptr<model::KvCache> kv_;
  const EngineOptions options_;
  metrics::ServerMetrics* const metrics_;  // may be null

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Sequence>> incoming_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time stop_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;  // the engine thread has left Loop()
  int64_t queued_ ABSL_GUARDED_BY(mu_) = 0;  // incoming + waiting, for the queue bound

  // Engine thread only.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  absl::Duration last_step_ = absl::ZeroDuration();

  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int64_t> stat_running_{0}, stat_waiting_{0}, stat_kv_free_{0}, preemptions_{0}, load_join_waits_{0},
      load_joins_{0};
  std::thread thread_;
};

}  // namespace adapterd::engine

#endif  // ADAPTERD_SERVER_ENGINE_ENGINE_H_
