#include "server/http/generation.h"

#include <utility>

#include "absl/log/log.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/http/http_error.h"

namespace adapterd::http {

// The core's sink for one choice; forwards to the Generation, which it
// keeps alive until the engine has finished with the choice.
class Generation::ChoiceSink final : public core::GenerateSink {
 public:
  ChoiceSink(std::shared_ptr<Generation> generation, size_t index)
      : generation_(std::move(generation)), index_(index) {}
  void OnChunk(const core::GenerateChunk& chunk) override { generation_->OnChunk(index_, chunk); }
  void OnFinish(const core::GenerateFinish& finish) override { generation_->OnFinish(index_, finish); }

 private:
  const std::shared_ptr<Generation> generation_;
  const size_t index_;
};

namespace {

// Bytes a pending token is counted as, besides its text.
constexpr int64_t kBytesPerToken = 32;

OpenAiFormatter::Head HeadOf(const GenerationContext& ctx, const OpenAiRequest& r) {
  OpenAiFormatter::Head h;
  h.kind = r.kind;
  h.id = absl::StrCat(r.kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-", ctx.request_id);
  h.model = ctx.model;
  h.created = ctx.created;
  h.logprobs = r.logprobs;
  h.token_ids = r.return_token_ids;
  h.include_usage = r.include_usage;
  return h;
}

const char* Route(const OpenAiRequest& r) { return r.kind == ApiKind::kChat ? "chat_completions" : "completions"; }

}  // namespace

Generation::Generation(GenerationContext context, OpenAiRequest request, std::shared_ptr<HttpExchange> exchange)
    : ctx_(std::move(context)),
      request_(std::move(request)),
      exchange_(std::move(exchange)),
      num_choices_(request_.prompts.size() * static_cast<size_t>(request_.n)),
      choices_(num_choices_),
      formatter_(HeadOf(ctx_, request_), num_choices_, ctx_.core) {}

void Generation::Run(GenerationContext context, OpenAiRequest request, std::shared_ptr<HttpExchange> exchange) {
  auto g = std::make_shared<Generation>(std::move(context), std::move(request), exchange);
  exchange->OnAbandoned([w = std::weak_ptr<Generation>(g)] {
    if (std::shared_ptr<Generation> g = w.lock()) g->CancelAll();
  });
  if (absl::Status st = g->Submit(); !st.ok()) {
    g->CancelAll();
    HttpResponse r = ErrorResponse(st);
    r.headers.emplace_back("x-request-id", g->ctx_.request_id);
    if (g->ctx_.metrics != nullptr) g->ctx_.metrics->RecordRequest(Route(g->request_), r.status);
    exchange->Respond(std::move(r));
    return;
  }
  if (!g->request_.stream) return;  // answered when the last choice finishes
  HttpResponse head;
  head.content_type = "text/event-stream";
  head.headers = {{"Cache-Control", "no-cache"}, {"x-request-id", g->ctx_.request_id}};
  if (g->ctx_.metrics != nullptr) g->ctx_.metrics->RecordRequest(Route(g->request_), 200);
  exchange->Stream(std::move(head), g);
}

absl::Status Generation::Submit() {
  for (size_t i = 0; i < num_choices_; ++i) {
    core::GenerateRequest r = request_.prompts[i / static_cast<size_t>(request_.n)];
    r.engine.id = num_choices_ == 1 ? ctx_.request_id : absl::StrCat(ctx_.request_id, "-", i);
    // Reproducible and distinct samples when a seed is given.
    if (r.engine.sampling.seed != 0) r.engine.sampling.seed += i % static_cast<size_t>(request_.n);
    const bool composed = !r.adapters.empty();
    absl::StatusOr<std::shared_ptr<engine::RequestHandle>> h =
        ctx_.core->Generate(ctx_.adapter_id, std::move(r), std::make_shared<ChoiceSink>(shared_from_this(), i));
    if (!h.ok()) {
      if (h.status().code() == absl::StatusCode::kNotFound) {
        return WithParam(absl::NotFoundError(absl::StrCat("The model '", ctx_.model, "' does not exist (",
                                                          h.status().message(), ")")),
                         "model");
      }
      // The core names a composition's field ("adapters[1]: ...").
      if (composed && absl::StartsWith(h.status().message(), "adapters")) return WithParam(h.status(), "adapters");
      return h.status();
    }
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      choices_[i].handle = *h;
      cancel = cancelled_;
    }
    if (cancel) (*h)->Cancel();
  }
  return absl::OkStatus();
}

void Generation::OnChunk(size_t index, const core::GenerateChunk& chunk) {
  bool overflow = false;
  {
    absl::MutexLock lock(&mu_);
    Choice& c = choices_[index];
    c.tokens.insert(c.tokens.end(), chunk.tokens.begin(), chunk.tokens.end());
    c.logprobs.insert(c.logprobs.end(), chunk.logprobs.begin(), chunk.logprobs.end());
    c.text.append(chunk.text);
    if (!request_.stream) return;
    pending_bytes_ += static_cast<int64_t>(chunk.text.size()) + kBytesPerToken * static_cast<int64_t>(chunk.tokens.size());
    if (pending_bytes_ > ctx_.max_pending_bytes && !overflowed_) overflowed_ = overflow = true;
  }
  if (overflow) {
    LOG(INFO) << "request " << ctx_.request_id << ": the client reads too slowly (over " << ctx_.max_pending_bytes
              << " bytes of output wait for it); cancelled";
    if (ctx_.metrics != nullptr) ctx_.metrics->RecordAbort("slow_client");
    exchange_->Abort();
    return;
  }
  exchange_->Wake();
}

void Generation::OnFinish(size_t index, const core::GenerateFinish& finish) {
  bool all = false;
  {
    absl::MutexLock lock(&mu_);
    Choice& c = choices_[index];
    c.finished = true;
    c.finish = finish;
    all = ++finished_ == static_cast<int64_t>(num_choices_);
  }
  if (request_.stream) {
    exchange_->Wake();
  } else if (all) {
    exchange_->Post([self = shared_from_this()] { self->RespondWhole(); });
  }
}

void Generation::CancelAll() {
  std::vector<std::shared_ptr<engine::RequestHandle>> handles;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    for (const Choice& c : choices_) {
      if (c.handle != nullptr) handles.push_back(c.handle);
    }
  }
  for (const auto& h : handles) h->Cancel();
}

Usage Generation::TotalUsage() const {
  Usage u;
  const size_t n = static_cast<size_t>(request_.n);
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (i % n == 0) u.prompt_tokens += choices_[i].finish.finish.prompt_tokens;
    u.completion_tokens += choices_[i].finish.finish.completion_tokens;
  }
  return u;
}

void Generation::RespondWhole() {
  HttpResponse r;
  {
    absl::MutexLock lock(&mu_);
    absl::Status error;
    std::vector<ChoiceDelta> deltas;
    for (size_t i = 0; i < choices_.size(); ++i) {
      const Choice& c = choices_[i];
      if (!c.finish.finish.status.ok() && error.ok()) error = c.finish.finish.status;
      deltas.push_back({i, c.tokens, c.logprobs, c.text, FinishReasonName(c.finish.finish.reason)});
    }
    if (error.ok()) {
      r.body = formatter_.Whole(deltas, TotalUsage());
    } else {
      r = ErrorResponse(error);
    }
  }
  r.headers.emplace_back("x-request-id", ctx_.request_id);
  if (ctx_.metrics != nullptr) ctx_.metrics->RecordRequest(Route(request_), r.status);
  exchange_->Respond(std::move(r));
}

PullResult Generation::Pull(std::string* out) {
  std::vector<Taken> taken;
  bool all_taken = true;
  Usage usage;
  {
    absl::MutexLock lock(&mu_);
    if (overflowed_) return PullResult::kAbort;
    for (size_t i = 0; i < choices_.size(); ++i) {
      Choice& c = choices_[i];
      const bool finish_now = c.finished && !c.finish_taken;
      if (!c.tokens.empty() || !c.text.empty() || finish_now) {
        Taken t{i, std::move(c.tokens), std::move(c.logprobs), std::move(c.text), std::nullopt};
        c.tokens.clear();
        c.logprobs.clear();
        c.text.clear();
        if (finish_now) {
          c.finish_taken = true;
          t.finish = c.finish;
        }
        taken.push_back(std::move(t));
      }
      all_taken = all_taken && c.finish_taken;
    }
    pending_bytes_ = 0;
    if (all_taken) usage = TotalUsage();
  }
  if (Format(taken, out)) return PullResult::kDone;
  if (!all_taken) return PullResult::kWait;
  if (request_.include_usage) formatter_.AppendUsageEvent(usage, out);
  OpenAiFormatter::AppendDone(out);
  ended_ = true;
  return PullResult::kDone;
}

bool Generation::Format(std::vector<Taken>& taken, std::string* out) {
  if (ended_) return true;
  if (!started_) {
    started_ = true;
    if (request_.kind == ApiKind::kChat) {
      for (size_t i = 0; i < num_choices_; ++i) formatter_.AppendRoleEvent(i, out);
    }
  }
  for (Taken& t : taken) {
    if (t.finish.has_value() && !t.finish->finish.status.ok()) {
      // The engine could not finish this choice (the drain's grace ran out,
      // or an internal error): the stream ends with the error.
      LOG(INFO) << "request " << ctx_.request_id << " failed mid-stream: " << t.finish->finish.status;
      CancelAll();
      OpenAiFormatter::AppendErrorEvent(t.finish->finish.status, out);
      OpenAiFormatter::AppendDone(out);
      ended_ = true;
      return true;
    }
    ChoiceDelta d{t.index, t.tokens, t.logprobs, t.text, std::nullopt};
    if (t.finish.has_value()) d.finish_reason = FinishReasonName(t.finish->finish.reason);
    formatter_.AppendChunkEvent(d, out);
  }
  return false;
}

}  // namespace adapterd::http
