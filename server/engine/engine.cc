#include "server/engine/engine.h"

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <functional>
#include <map>
#include <string>
#include <cmath>
#include <utility>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/engine/sampler.h"

namespace adapterd::engine {
namespace {

int64_t VirtualTokens(const GenerationRequest& r) {
  return r.adapter != nullptr ? r.adapter->num_virtual_tokens() : 0;
}

}  // namespace

struct Engine::Sequence {
  GenerationRequest request;
  std::shared_ptr<ResultSink> sink;
  std::shared_ptr<RequestHandle> handle;
  Sampler sampler;
  // The adapter's weights once its lease has settled ready; null for the
  // base and until then.
  const model::AdapterWeights* weights = nullptr;
  int64_t virtual_tokens = 0;   // a prompt-tuning adapter's, before the prompt
  std::vector<int64_t> tokens;  // virtual tokens, prompt, then generated tokens
  int64_t num_computed = 0;     // tokens whose keys and values are in the cache
  int64_t generated = 0;
  std::vector<int32_t> blocks;
  CacheCursor cursor;           // its place in the prefix cache
  absl::Time arrival = absl::Now();
  absl::Time last_token;
  uint64_t order = 0;           // arrival order: FCFS admission, newest is preempted first
  bool admitted_once = false;   // counted against the waiting bound until first admitted
  bool join_checked = false;    // WaitForJoiningLoads() has looked at it
  bool finished = false;

  // A prompt-tuning adapter's virtual tokens come first, as placeholder ids
  // whose embeddings the model replaces.
  Sequence(GenerationRequest r, std::shared_ptr<ResultSink> s, std::shared_ptr<RequestHandle> h)
      : request(std::move(r)), sink(std::move(s)), handle(std::move(h)), sampler(request.sampling),
        virtual_tokens(VirtualTokens(request)), tokens(static_cast<size_t>(virtual_tokens), 0) {
    tokens.insert(tokens.end(), request.prompt.begin(), request.prompt.end());
  }
  // Whether the request waits for its adapter's lease to settle.
  bool adapter_pending() const {
    if (request.adapter == nullptr || weights != nullptr) return false;
    absl::StatusOr<const model::AdapterWeights*> w = request.adapter->weights();
    return w.ok() && *w == nullptr;
  }
  // Prompt as the model sees it: virtual tokens plus the caller's tokens.
  int64_t prompt_len() const { return virtual_tokens + static_cast<int64_t>(request.prompt.size()); }
  int64_t max_len() const { return prompt_len() + MaxNewTokens(request); }
  bool classify() const { return request.kind == RequestKind::kClassify; }
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<model::LlamaModel> model,
                                                       const EngineOptions& options,
                                                       metrics::EngineMetrics* metrics) {
  if (options.max_batch_size < 1 || options.max_tokens_per_step < 1 || options.max_waiting < 0) {
    return absl::InvalidArgumentError(
        "max_batch_size and max_tokens_per_step must be >= 1, max_waiting >= 0");
  }
  if (!(options.load_join_wait >= 0 && options.load_join_wait <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("load_join_wait must be within [0, 1], not ", options.load_join_wait));
  }
  if (options.max_prompt_tokens < 0 || options.max_new_tokens < 0 || options.max_stop_token_ids < 0) {
    return absl::InvalidArgumentError("max_prompt_tokens, max_new_tokens and max_stop_token_ids must be >= 0");
  }
  absl::StatusOr<std::unique_ptr<model::KvCache>> kv = model::KvCache::Create(
      model->config(), options.kv_block_size, options.kv_cache_bytes, model->options().dtype,
      model->options().device);
  if (!kv.ok()) {
    return absl::Status(kv.status().code(), absl::StrCat("the KV cache budget (--kv_cache_bytes / --kv_cache_mb) on ",
                                                         model->options().device.str(), ": ", kv.status().message()));
  }
  LOG(INFO) << "kv cache: " << (*kv)->num_blocks() << " blocks of " << options.kv_block_size
            << " tokens (" << (*kv)->num_blocks() * options.kv_block_size << " tokens)";
  return std::unique_ptr<Engine>(new Engine(std::move(model), *std::move(kv), options, metrics));
}

Engine::Engine(std::unique_ptr<model::LlamaModel> model, std::unique_ptr<model::KvCache> kv,
               const EngineOptions& options, metrics::EngineMetrics* metrics)
    : model_(std::move(model)), kv_(std::move(kv)), options_(options), blocks_(kv_.get(), options.prefix_caching),
      metrics_(metrics), inbox_(std::make_shared<Inbox>()) {
  stat_kv_free_ = kv_->free_blocks();
  thread_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  Shutdown(absl::ZeroDuration());
  // Requests submitted after the thread left are dropped with the engine;
  // the inbox itself may outlive it in a lease's callback.
  std::deque<std::unique_ptr<Sequence>> late;
  absl::MutexLock lock(&inbox_->mu);
  late.swap(inbox_->incoming);
}

void Engine::Inbox::Wake() {
  absl::MutexLock lock(&mu);
  ++events;
}

absl::Status Engine::Validate(const GenerationRequest& r) const {
  return ValidateRequest(r, model_->config(), options_);
}

absl::StatusOr<std::shared_ptr<RequestHandle>> Engine::Submit(GenerationRequest request,
                                                              std::shared_ptr<ResultSink> sink) {
  if (absl::Status s = Validate(request); !s.ok()) return s;
  if (request.kind == RequestKind::kClassify && request.adapter == nullptr) {
    return absl::FailedPreconditionError("the base model is a causal LM with no classification head; Classify "
                                         "needs a SEQ_CLS adapter");
  }
  const int64_t blocks = kv_->BlocksFor(VirtualTokens(request) + static_cast<int64_t>(request.prompt.size()) +
                                        MaxNewTokens(request));
  if (blocks > kv_->num_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request needs ", blocks, " KV cache blocks but the pool holds ", kv_->num_blocks(),
        "; lower sampling.max_new_tokens or raise --kv_cache_bytes"));
  }
  auto wake = [inbox = std::weak_ptr<Inbox>(inbox_)] {
    if (std::shared_ptr<Inbox> in = inbox.lock()) in->Wake();
  };
  auto handle = std::make_shared<RequestHandle>(wake);
  auto seq = std::make_unique<Sequence>(std::move(request), std::move(sink), handle);
  // A lease that settles wakes the engine thread; it never polls.
  if (seq->request.adapter != nullptr) seq->request.adapter->NotifyWhenSettled(wake);
  absl::MutexLock lock(&inbox_->mu);
  if (inbox_->stopping) return absl::UnavailableError("server is shutting down");
  if (inbox_->queued >= options_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat("waiting queue is full (max_waiting=", options_.max_waiting, " requests); retry later"));
  }
  ++inbox_->queued;
  seq->order = inbox_->next_order++;
  inbox_->incoming.push_back(std::move(seq));
  return handle;
}

void Engine::BeginShutdown(absl::Duration grace) {
  absl::MutexLock lock(&inbox_->mu);
  if (!inbox_->stopping) {
    inbox_->stopping = true;
    inbox_->stop_deadline = absl::Now() + grace;
  } else {
    inbox_->stop_deadline = std::min(inbox_->stop_deadline, absl::Now() + grace);
  }
}

bool Engine::AwaitStopped(absl::Time deadline) {
  absl::MutexLock lock(&inbox_->mu);
  return inbox_->mu.AwaitWithDeadline(absl::Condition(&inbox_->stopped), deadline);
}

bool Engine::accepting() const {
  absl::MutexLock lock(&inbox_->mu);
  return !inbox_->stopping;
}

void Engine::Shutdown(absl::Duration grace) {
  BeginShutdown(grace);
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

Engine::Stats Engine::GetStats() const {
  return Stats{stat_running_.load(),        stat_waiting_.load(),      stat_kv_free_.load(),
               kv_->num_blocks(),            preemptions_.load(),       load_join_waits_.load(),
               load_joins_.load(),           peak_running_.load(),      stat_prefix_queried_.load(),
               stat_prefix_hits_.load(),     stat_prefix_blocks_.load(), stat_kv_copies_.load()};
}

void Engine::Loop() {
  Seen seen;
  while (true) {
    TakeIncoming(seen);
    const bool expired = seen.stopping && absl::Now() >= seen.stop_deadline;
    DropFinishedOrCancelled(expired);
    if (seen.stopping && running_.empty() && waiting_.empty()) break;
    WaitForJoiningLoads();
    const absl::Time step_start = absl::Now();
    Step();
    last_step_ = absl::Now() - step_start;
    // Nothing runs, and nothing waiting can run until the inbox changes:
    // the queue is empty, or everything in it waits for an adapter.
    const bool all_pending = std::all_of(waiting_.begin(), waiting_.end(),
                                         [](const std::unique_ptr<Sequence>& s) { return s->adapter_pending(); });
    if (running_.empty() && all_pending && !(seen.stopping && waiting_.empty())) WaitForWork(seen);
  }
  PublishStats();
  absl::MutexLock lock(&inbox_->mu);
  inbox_->stopped = true;
}

void Engine::TakeIncoming(Seen& seen) {
  absl::MutexLock lock(&inbox_->mu);
  while (!inbox_->incoming.empty()) {
    waiting_.push_back(std::move(inbox_->incoming.front()));
    inbox_->incoming.pop_front();
  }
  seen.events = inbox_->events;
  seen.stopping = inbox_->stopping;
  seen.stop_deadline = inbox_->stop_deadline;
}

void Engine::WaitForWork(const Seen& seen) {
  absl::Time wake_at = seen.stopping ? seen.stop_deadline : absl::InfiniteFuture();
  for (const auto& s : waiting_) wake_at = std::min(wake_at, s->request.deadline);
  absl::MutexLock lock(&inbox_->mu);
  auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(inbox_->mu) {
    return !inbox_->incoming.empty() || inbox_->events != seen.events || inbox_->stopping != seen.stopping ||
           inbox_->stop_deadline != seen.stop_deadline;
  };
  inbox_->mu.AwaitWithDeadline(absl::Condition(&changed), wake_at);
}

void Engine::FinishSequence(Sequence& seq, FinishReason reason, absl::Status status) {
  if (seq.finished) return;
  seq.finished = true;
  blocks_.Free(seq.blocks);
  // Let go of the adapter before the client hears back, so an unload right
  // after the response finds no reference left in the engine.
  seq.weights = nullptr;
  seq.request.adapter.reset();
  if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
    LOG(WARNING) << "request " << seq.request.id << " ended: " << status;
  }
  if (metrics_ != nullptr && reason != FinishReason::kError && seq.generated > 0) {
    metrics_->request_duration().Observe(absl::ToDoubleSeconds(absl::Now() - seq.arrival));
  }
  seq.sink->OnFinish(Finish{reason, std::move(status), static_cast<int64_t>(seq.request.prompt.size()),
                            seq.generated, seq.virtual_tokens});
}

void Engine::DropFinishedOrCancelled(bool shutdown_expired) {
  const absl::Time now = absl::Now();
  auto should_drop = [&](Sequence& s) {
    if (shutdown_expired) {
      FinishSequence(s, FinishReason::kCancelled,
                     absl::UnavailableError("server shut down before the request finished"));
    } else if (s.handle->cancelled()) {
      FinishSequence(s, FinishReason::kCancelled, absl::CancelledError("cancelled by the client"));
    } else if (now >= s.request.deadline) {
      FinishSequence(s, FinishReason::kCancelled,
                     absl::DeadlineExceededError("deadline exceeded"));
    }
    return s.finished;
  };
  size_t dropped_waiting = 0;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (should_drop(**it)) {
      dropped_waiting += (*it)->admitted_once ? 0 : 1;
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  std::erase_if(running_, [&](const std::unique_ptr<Sequence>& s) { return should_drop(*s); });
  ReleaseQueued(static_cast<int64_t>(dropped_waiting));
}

void Engine::ReleaseQueued(int64_t n) {
  if (n == 0) return;
  absl::MutexLock lock(&inbox_->mu);
  inbox_->queued -= n;
}

void Engine::Admit() {
  size_t admitted = 0, failed = 0;
  std::set<const model::AdapterWeights*> adapters;  // distinct adapters in the batch
  if (options_.max_adapters_per_batch > 0) {
    for (const auto& s : running_) {
      if (s->weights != nullptr) adapters.insert(s->weights);
    }
  }
  for (auto it = waiting_.begin();
       it != waiting_.end() && static_cast<int64_t>(running_.size()) < options_.max_batch_size;) {
    Sequence& seq = **it;
    if (seq.weights == nullptr && seq.request.adapter != nullptr) {
      absl::StatusOr<const model::AdapterWeights*> w = seq.request.adapter->weights();
      if (!w.ok()) {
        failed += seq.admitted_once ? 0 : 1;
        FinishSequence(seq, FinishReason::kError, w.status());
        it = waiting_.erase(it);
        continue;
      }
      if (*w == nullptr) {  // still loading: the requests behind it go ahead
        ++it;
        continue;
      }
      seq.weights = *w;
      if (absl::Status st = CheckHead(seq); !st.ok()) {
        failed += seq.admitted_once ? 0 : 1;
        FinishSequence(seq, FinishReason::kError, std::move(st));
        it = waiting_.erase(it);
        continue;
      }
    }
    if (options_.max_adapters_per_batch > 0 && seq.weights != nullptr &&
        !adapters.contains(seq.weights) &&
        static_cast<int64_t>(adapters.size()) >= options_.max_adapters_per_batch) {
      ++it;
      continue;
    }
    // Blocks for what is known now (prompt, or prompt plus tokens generated
    // before a preemption) and the next token, after the adapter's prefix
    // and what the prefix cache holds; later tokens are reserved step by
    // step. FCFS: the first request that can run waits for blocks.
    if (!StartBlocks(seq)) break;
    if (seq.weights != nullptr && options_.max_adapters_per_batch > 0) adapters.insert(seq.weights);
    if (!seq.admitted_once) {
      seq.admitted_once = true;
      ++admitted;
      if (metrics_ != nullptr) {
        metrics_->queue_time().Observe(absl::ToDoubleSeconds(absl::Now() - seq.arrival));
        metrics_->prompt_tokens().Increment(static_cast<double>(seq.request.prompt.size()));
      }
    }
    running_.push_back(std::move(*it));
    it = waiting_.erase(it);
  }
  ReleaseQueued(static_cast<int64_t>(admitted + failed));
  peak_running_ = std::max(peak_running_.load(), static_cast<int64_t>(running_.size()));
}

void Engine::WaitForJoiningLoads() {
  if (options_.load_join_wait <= 0 || running_.empty() ||
      static_cast<int64_t>(running_.size()) >= options_.max_batch_size) {
    return;
  }
  uint64_t events;
  {
    absl::MutexLock lock(&inbox_->mu);
    events = inbox_->events;  // read first, so no settling is missed below
  }
  std::vector<Sequence*> loading;
  for (auto& seq : waiting_) {
    if (seq->join_checked) continue;
    seq->join_checked = true;
    if (seq->adapter_pending()) loading.push_back(seq.get());
  }
  if (loading.empty()) return;
  ++load_join_waits_;
  const absl::Time deadline = absl::Now() + last_step_ * options_.load_join_wait;
  while (!loading.empty()) {
    {
      absl::MutexLock lock(&inbox_->mu);
      auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(inbox_->mu) {
        return inbox_->events != events || inbox_->stopping;
      };
      if (!inbox_->mu.AwaitWithDeadline(absl::Condition(&changed), deadline)) return;
      if (inbox_->stopping) return;
      events = inbox_->events;
    }
    std::erase_if(loading, [this](Sequence* seq) {
      if (seq->adapter_pending()) return false;
      if (seq->request.adapter->weights().ok()) ++load_joins_;
      return true;
    });
  }
}

void Engine::Preempt(Sequence* victim) {
  // Recompute later: drop the cache, keep the tokens; it rejoins the queue in
  // arrival order, ahead of anything that arrived after it.
  blocks_.Free(victim->blocks);
  victim->num_computed = 0;
  ++preemptions_;
  if (metrics_ != nullptr) metrics_->preemptions().Increment();
  auto it = std::find_if(running_.begin(), running_.end(),
                         [&](const std::unique_ptr<Sequence>& s) { return s.get() == victim; });
  std::unique_ptr<Sequence> owned = std::move(*it);
  running_.erase(it);
  auto pos = std::find_if(waiting_.begin(), waiting_.end(),
                          [&](const std::unique_ptr<Sequence>& s) { return s->order > victim->order; });
  waiting_.insert(pos, std::move(owned));
}

bool Engine::StartBlocks(Sequence& seq) {
  const int64_t tokens = static_cast<int64_t>(seq.tokens.size());
  if (seq.blocks.empty()) {
    std::optional<int64_t> covered = blocks_.Begin(seq.weights, seq.tokens, seq.blocks, seq.cursor);
    if (!covered.has_value()) return false;
    seq.num_computed = *covered;
  }
  if (blocks_.Reserve(seq.blocks, tokens + 1)) return true;
  blocks_.Free(seq.blocks);
  seq.num_computed = 0;
  return false;
}

void Engine::EnsureBlocks(Sequence* seq, int64_t tokens) {
  while (!blocks_.Reserve(seq->blocks, tokens) ||
         !blocks_.MakeWritable(seq->blocks, seq->num_computed, tokens)) {
    Sequence* newest = nullptr;
    for (const auto& s : running_) {
      if (newest == nullptr || s->order > newest->order) newest = s.get();
    }
    Preempt(newest);
    if (newest == seq) return;
  }
}

void Engine::Step() {
  blocks_.DropExpired();
  Admit();
  PublishStats();  // admitted requests show as running during a long forward
  if (running_.empty()) return;
  const auto step_start = std::chrono::steady_clock::now();
  model::StepProfile profile;
  double sampling = 0;

  // Decode tokens first, then prompt chunks, within the step's token budget.
  struct Pick {
    Sequence* seq;
    int64_t n;
  };
  std::vector<Pick> picks;
  int64_t budget = options_.max_tokens_per_step;
  bool any_adapter = false;
  std::vector<Pick> prefills;
  for (auto& s : running_) {
    const int64_t pending = static_cast<int64_t>(s->tokens.size()) - s->num_computed;
    if (pending <= 0) continue;
    if (pending == 1 && budget > 0) {
      --budget;
      picks.push_back({s.get(), 1});
      any_adapter |= s->weights != nullptr;
    } else if (pending > 1) {
      prefills.push_back({s.get(), 0});
    }
  }
  // Prompt chunks: first an equal share of the remaining budget for every
  // prompt in progress (so a long prompt cannot hold back the short ones that
  // arrive while it is being prefilled), then what is left, first come first
  // served.
  if (!prefills.empty() && budget > 0) {
    const int64_t share = std::max<int64_t>(kv_->block_size(), budget / static_cast<int64_t>(prefills.size()));
    for (int pass = 0; pass < 2 && budget > 0; ++pass) {
      for (Pick& p : prefills) {
        const int64_t pending = static_cast<int64_t>(p.seq->tokens.size()) - p.seq->num_computed - p.n;
        const int64_t n = std::min({pending, budget, pass == 0 ? share : budget});
        if (n <= 0) continue;
        p.n += n;
        budget -= n;
      }
    }
    for (const Pick& p : prefills) {
      if (p.n == 0) continue;
      picks.push_back(p);
      any_adapter |= p.seq->weights != nullptr;
    }
  }
  // Blocks for this step's tokens; when the pool runs dry the newest
  // sequences are preempted (and dropped from this step if picked).
  // A running sequence always holds blocks, so empty blocks mean "preempted".
  for (const Pick& p : picks) {
    if (!p.seq->blocks.empty()) EnsureBlocks(p.seq, p.seq->num_computed + p.n);
  }
  std::erase_if(picks, [](const Pick& p) { return p.seq->blocks.empty(); });
  // Rows of one adapter sit together, so each adapter's delta is one product.
  if (any_adapter) {
    std::stable_sort(picks.begin(), picks.end(), [](const Pick& a, const Pick& b) {
      return std::less<>()(a.seq->weights, b.seq->weights);
    });
  }
  model::ForwardBatch batch;
  std::vector<Sequence*> in_batch;
  for (const Pick& p : picks) {
    Sequence* s = p.seq;
    batch.seqs.push_back(model::SequenceChunk{
        p.n, s->num_computed, &s->blocks,
        s->num_computed + p.n == static_cast<int64_t>(s->tokens.size()), s->classify()});
    batch.token_ids.insert(batch.token_ids.end(), s->tokens.begin() + s->num_computed,
                           s->tokens.begin() + s->num_computed + p.n);
    if (any_adapter) batch.adapters.push_back(s->weights);
    in_batch.push_back(s);
  }
  if (metrics_ != nullptr) {
    metrics_->batch_size().Observe(static_cast<double>(in_batch.size()));
    metrics_->tokens_per_step().Observe(static_cast<double>(batch.token_ids.size()));
  }

  batch.profile = &profile;
  absl::StatusOr<model::ForwardOutput> out = model_->Run(batch, *kv_);
  if (!out.ok()) {
    LOG(ERROR) << "forward step failed: " << out.status();
    for (Sequence* s : in_batch) FinishSequence(*s, FinishReason::kError, out.status());
  } else {
    const absl::Time now = absl::Now();
    int64_t scored = 0;
    // Rows of out->logits, in order: the sequences that generate a token.
    std::vector<Sequence*> generating;
    std::vector<Sampler*> samplers;
    for (size_t i = 0; i < in_batch.size(); ++i) {
      Sequence& s = *in_batch[i];
      s.num_computed += batch.seqs[i].num_tokens;
      blocks_.Commit(s.weights, s.tokens, s.num_computed, s.blocks, s.cursor);
      if (!batch.seqs[i].wants_logits) continue;
      if (s.classify()) {
        const at::Tensor& scores = out->scores[scored++];
        s.sink->OnScores(std::span<const float>(scores.data_ptr<float>(), static_cast<size_t>(scores.numel())));
        FinishSequence(s, FinishReason::kLength, absl::OkStatus());
        continue;
      }
      generating.push_back(&s);
      samplers.push_back(&s.sampler);
    }
    std::vector<Sampler::Choice> choices;
    {
      model::ScopedTimer timer(&sampling);
      choices = Sampler::SampleRows(out->logits, samplers);
    }
    for (size_t i = 0; i < generating.size(); ++i) EmitToken(*generating[i], choices[i], now);
  }
  std::erase_if(running_, [](const std::unique_ptr<Sequence>& s) { return s->finished; });
  if (metrics_ != nullptr && out.ok()) {
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    metrics_->RecordStep(total, profile.gemm, profile.attention, profile.adapters, sampling);
  }
  PublishStats();
}

absl::Status Engine::CheckHead(const Sequence& seq) const {
  const bool head = seq.weights != nullptr && seq.weights->is_classifier();
  if (seq.classify() == head) return absl::OkStatus();
  const std::string& id = seq.request.adapter->adapter_id();
  if (head) {
    return absl::FailedPreconditionError(absl::StrCat(
        "adapter '", id, "' is a sequence-classification adapter (task_type SEQ_CLS); use Classify, not Generate"));
  }
  return absl::FailedPreconditionError(absl::StrCat("adapter '", id,
                                                    "' is a causal-LM adapter without a classification head; "
                                                    "Classify needs a SEQ_CLS adapter"));
}

void Engine::EmitToken(Sequence& s, const Sampler::Choice& choice, absl::Time now) {
  s.tokens.push_back(choice.token);
  ++s.generated;
  if (metrics_ != nullptr) {
    metrics_->generated_tokens().Increment();
    if (s.generated == 1) {
      metrics_->time_to_first_token().Observe(absl::ToDoubleSeconds(now - s.arrival));
    } else {
      metrics_->time_per_output_token().Observe(absl::ToDoubleSeconds(now - s.last_token));
    }
  }
  s.last_token = now;
  const int64_t tok[1] = {choice.token};
  const float lp[1] = {choice.logprob};
  s.sink->OnTokens(tok, s.request.sampling.return_logprobs ? std::span<const float>(lp) : std::span<const float>());
  const SamplingParams& sp = s.request.sampling;
  auto contains = [&](const std::vector<int64_t>& ids) {
    return std::find(ids.begin(), ids.end(), choice.token) != ids.end();
  };
  if (contains(sp.stop_token_ids) || (!sp.ignore_eos && contains(model_->config().eos_token_ids)) ||
      s.sink->StopRequested()) {
    FinishSequence(s, FinishReason::kStop, absl::OkStatus());
  } else if (s.generated >= sp.max_new_tokens) {
    FinishSequence(s, FinishReason::kLength, absl::OkStatus());
  }
}

void Engine::PublishStats() {
  stat_kv_free_ = kv_->free_blocks();
  stat_prefix_queried_ = blocks_.queried_tokens();
  stat_prefix_hits_ = blocks_.hit_tokens();
  stat_prefix_blocks_ = blocks_.cached_blocks();
  stat_kv_copies_ = kv_->copies();
  // Last: a reader that sees these sees the values above from the same step.
  stat_waiting_ = static_cast<int64_t>(waiting_.size());
  stat_running_ = static_cast<int64_t>(running_.size());
  if (metrics_ != nullptr) {
    metrics_->SetSchedulerState(static_cast<int64_t>(running_.size()), static_cast<int64_t>(waiting_.size()),
                                blocks_.utilization());
    metrics_->SetPrefixCache(blocks_.queried_tokens(), blocks_.hit_tokens());
    std::map<std::string, std::pair<int64_t, int64_t>> activity;
    auto id = [](const Sequence& s) { return s.request.adapter ? s.request.adapter->adapter_id() : std::string(); };
    for (const auto& s : running_) ++activity[id(*s)].first;
    for (const auto& s : waiting_) ++activity[id(*s)].second;
    metrics_->SetAdapterActivity(activity, options_.max_batch_size);
  }
}

}  // namespace adapterd::engine
