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
#include "absl/functional/any_invocable.h"
#include "server/engine/block_manager.h"
#include "server/engine/request.h"
#include "server/engine/sampler.h"
#include "server/metrics/engine_metrics.h"
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
  // Automatic prefix caching: full KV blocks a sequence computed are kept,
  // keyed by adapter and tokens, for later sequences that start the same
  // way (see BlockManager).
  bool prefix_caching = false;
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

// Lets the submitter of a request cancel it: the engine drops the request at
// its next step, or at once when it is idle. Thread-safe.
class RequestHandle {
 public:
  // `wake` tells the engine to look (see Engine::Submit).
  explicit RequestHandle(absl::AnyInvocable<void()> wake = nullptr) : wake_(std::move(wake)) {}
  void Cancel() {
    if (cancelled_.exchange(true, std::memory_order_relaxed)) return;
    if (wake_) wake_();
  }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
  absl::AnyInvocable<void()> wake_;
};

// Runs generation and classification requests with iteration-level
// batching: at every step,
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
// Classification requests are prompt rows like any other; the step that
// completes a prompt hands the request its scores and ends it.
// Two exceptions skip a waiting request without holding back the ones
// behind it: its adapter is still being brought in (its lease has not
// settled), or admitting it would put more than max_adapters_per_batch distinct
// adapters in the batch. A step may start up to load_join_wait of a step late
// while a new request's adapter is being brought in (once per request).
// The engine never polls: leases that settle, cancels, new requests and
// shutdown each wake its thread.
class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<model::LlamaModel> model,
                                                        const EngineOptions& options,
                                                        metrics::EngineMetrics* metrics);
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
      ABSL_LOCKS_EXCLUDED(inbox_->mu);

  // Stops accepting requests, lets accepted ones finish until `grace` has
  // passed, then ends the rest with UNAVAILABLE and joins the engine thread.
  // Idempotent.
  void Shutdown(absl::Duration grace) ABSL_LOCKS_EXCLUDED(inbox_->mu);
  // Shutdown without the join: from now on Submit() gives UNAVAILABLE, and
  // accepted requests have until `grace` has passed. Returns at once.
  void BeginShutdown(absl::Duration grace) ABSL_LOCKS_EXCLUDED(inbox_->mu);
  // After BeginShutdown(): waits until every accepted request has ended
  // (finished, or cut off when the grace ran out) and the engine thread has
  // left its loop, or until `deadline`. Returns whether it has.
  bool AwaitStopped(absl::Time deadline) ABSL_LOCKS_EXCLUDED(inbox_->mu);
  // False once shutdown has begun.
  bool accepting() const ABSL_LOCKS_EXCLUDED(inbox_->mu);

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
    int64_t peak_running = 0;  // the most sequences ever running at once
    // Prefix cache: prompt positions looked up and found; blocks it holds.
    int64_t prefix_queried_tokens = 0;
    int64_t prefix_hit_tokens = 0;
    int64_t prefix_cached_blocks = 0;
    int64_t kv_copies = 0;  // copy-on-write copies of shared blocks
  };
  Stats GetStats() const;

 private:
  struct Sequence;
  // What other threads hand the engine thread, and what wakes it. Shared
  // with the callbacks of settling leases and cancelled handles, which may
  // run after the engine is gone.
  struct Inbox {
    absl::Mutex mu;
    std::deque<std::unique_ptr<Sequence>> incoming ABSL_GUARDED_BY(mu);
    bool stopping ABSL_GUARDED_BY(mu) = false;
    absl::Time stop_deadline ABSL_GUARDED_BY(mu) = absl::InfiniteFuture();
    bool stopped ABSL_GUARDED_BY(mu) = false;  // the engine thread has left Loop()
    int64_t queued ABSL_GUARDED_BY(mu) = 0;     // incoming + waiting, for the queue bound
    uint64_t next_order ABSL_GUARDED_BY(mu) = 0;
    // Bumped when a lease settles or a request is cancelled.
    uint64_t events ABSL_GUARDED_BY(mu) = 0;
    void Wake() ABSL_LOCKS_EXCLUDED(mu);
  };
  // What the engine thread saw of the inbox when it last took from it.
  struct Seen {
    uint64_t events = 0;
    bool stopping = false;
    absl::Time stop_deadline = absl::InfiniteFuture();
  };

  Engine(std::unique_ptr<model::LlamaModel> model, std::unique_ptr<model::KvCache> kv,
         const EngineOptions& options, metrics::EngineMetrics* metrics);
  void Loop();
  // Moves new requests to the waiting queue and records what the inbox says.
  void TakeIncoming(Seen& seen) ABSL_LOCKS_EXCLUDED(inbox_->mu);
  // With nothing running: sleeps until something in the inbox changes, the
  // grace ends or a waiting request's deadline passes.
  void WaitForWork(const Seen& seen) ABSL_LOCKS_EXCLUDED(inbox_->mu);
  void Step();
  void DropFinishedOrCancelled(bool shutdown_expired);
  void Admit();
  // Waits (bounded by options_.load_join_wait) for the adapters of waiting
  // requests not checked before whose leases have not settled.
  void WaitForJoiningLoads() ABSL_LOCKS_EXCLUDED(inbox_->mu);
  void Preempt(Sequence* victim);
  // Gives a sequence about to run the blocks it needs now: its adapter's
  // prefix and what the prefix cache holds (when it holds none yet), then
  // room for its known tokens and the next one. False, holding nothing,
  // when the pool is short.
  bool StartBlocks(Sequence& seq);
  // Reserves blocks so `seq` covers `tokens` positions, preempting the newest
  // sequences as needed (possibly `seq` itself, which then holds no blocks).
  void EnsureBlocks(Sequence* seq, int64_t tokens);
  void FinishSequence(Sequence& seq, FinishReason reason, absl::Status status);
  // FAILED_PRECONDITION naming the adapter when a classification request's
  // adapter has no classification head, or a generation request's has one.
  absl::Status CheckHead(const Sequence& seq) const;
  // Hands the token chosen for `s` to its sink and finishes the sequence
  // when it stops.
  void EmitToken(Sequence& s, const Sampler::Choice& choice, absl::Time now);
  void ReleaseQueued(int64_t n) ABSL_LOCKS_EXCLUDED(inbox_->mu);
  void PublishStats();

  const std::unique_ptr<model::LlamaModel> model_;
  const std::unique_ptr<model::KvCache> kv_;
  const EngineOptions options_;
  BlockManager blocks_;  // engine thread only
  metrics::EngineMetrics* const metrics_;  // may be null
  const std::shared_ptr<Inbox> inbox_;

  // Engine thread only.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  absl::Duration last_step_ = absl::ZeroDuration();

  std::atomic<int64_t> stat_running_{0}, stat_waiting_{0}, stat_kv_free_{0}, preemptions_{0}, load_join_waits_{0},
      load_joins_{0}, peak_running_{0}, stat_prefix_queried_{0}, stat_prefix_hits_{0}, stat_prefix_blocks_{0},
      stat_kv_copies_{0};
  std::thread thread_;
};

}  // namespace adapterd::engine

#endif  // ADAPTERD_SERVER_ENGINE_ENGINE_H_
