#include "server/rpc/inference_service.h"

#include <atomic>
#include <deque>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/log/log.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/rpc/grpc_status.h"

namespace adapterd::rpc {
namespace {

using adapterd::v1::FinishReason;
using adapterd::v1::GenerateRequest;
using adapterd::v1::GenerateResponse;
using adapterd::v1::GenerateStreamResponse;

constexpr char kRequestIdKey[] = "x-request-id";

FinishReason ToProto(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kLength: return adapterd::v1::FINISH_REASON_LENGTH;
    case engine::FinishReason::kStop: return adapterd::v1::FINISH_REASON_STOP;
    case engine::FinishReason::kCancelled: return adapterd::v1::FINISH_REASON_CANCELLED;
    case engine::FinishReason::kError: return adapterd::v1::FINISH_REASON_UNSPECIFIED;
  }
  return adapterd::v1::FINISH_REASON_UNSPECIFIED;
}

// What every call needs from the service.
struct Deps {
  core::ServerCore* core;
  metrics::RpcMetrics* metrics;     // may be null
  const CallAuthenticator* auth;    // null: no credential needed
};

// What both reactors share: translating and submitting the request, and
// forwarding a cancel that may arrive before or after the engine handle.
class CallCore {
 public:
  CallCore(const Deps& deps, std::string id) : deps_(deps), id_(std::move(id)) {}

  // Translates and submits; on error nothing was submitted.
  absl::Status Submit(const GenerateRequest& req, const grpc::CallbackServerContext& ctx,
                      std::shared_ptr<engine::ResultSink> sink) {
    if (deps_.auth != nullptr) {
      if (absl::Status st = deps_.auth->Authorize(ctx, Role::kInference); !st.ok()) return st;
    }
    absl::StatusOr<engine::GenerationRequest> r = TranslateGenerateRequest(req);
    if (!r.ok()) return r.status();
    r->id = id_;
    if (const auto deadline = ctx.deadline(); deadline != std::chrono::system_clock::time_point::max()) {
      r->deadline = absl::FromChrono(deadline);
    }
    absl::StatusOr<std::shared_ptr<engine::RequestHandle>> h =
        deps_.core->Generate(req.adapter_id(), *std::move(r), std::move(sink));
    if (!h.ok()) return h.status();
    absl::MutexLock lock(&mu_);
    handle_ = *h;
    if (cancelled_) handle_->Cancel();
    return absl::OkStatus();
  }
  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (handle_) handle_->Cancel();
  }
  const std::string& id() const { return id_; }
  metrics::RpcMetrics* metrics() const { return deps_.metrics; }

 private:
  const Deps deps_;
  const std::string id_;
  absl::Mutex mu_;
  std::shared_ptr<engine::RequestHandle> handle_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// Unary Generate: collects tokens, answers once.
class GenerateReactor final : public grpc::ServerUnaryReactor {
 public:
  GenerateReactor(grpc::CallbackServerContext* ctx, GenerateResponse* response, const Deps& deps,
                  std::string id)
      : response_(response), core_(deps, std::move(id)) {
    ctx->AddInitialMetadata(kRequestIdKey, core_.id());
    response_->set_request_id(core_.id());
  }

  // The reactor may be finished by the engine before Start returns; it is
  // deleted only when both Start and OnDone are over.
  void Start(const GenerateRequest& req, const grpc::CallbackServerContext& ctx) {
    if (absl::Status st = core_.Submit(req, ctx, std::make_shared<Sink>(this)); !st.ok()) {
      Complete(st);
    }
    Unref();
  }

  void OnCancel() override { core_.Cancel(); }
  void OnDone() override { Unref(); }

 private:
  class Sink final : public engine::ResultSink {
   public:
    explicit Sink(GenerateReactor* r) : r_(r) {}
    void OnTokens(std::span<const int64_t> tokens, std::span<const float> logprobs) override {
      for (int64_t t : tokens) r_->response_->add_token_ids(static_cast<uint32_t>(t));
      for (float lp : logprobs) r_->response_->add_logprobs(lp);
    }
    void OnFinish(const engine::Finish& f) override {
      r_->response_->set_finish_reason(ToProto(f.reason));
      r_->response_->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(f.prompt_tokens));
      r_->response_->mutable_usage()->set_virtual_tokens(static_cast<uint32_t>(f.virtual_tokens));
      r_->response_->mutable_usage()->set_completion_tokens(
          static_cast<uint32_t>(f.completion_tokens));
      r_->Complete(f.status);  // may delete the reactor: last statement
    }

   private:
    GenerateReactor* const r_;
  };

  void Complete(const absl::Status& status) {
    if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
      LOG(INFO) << "request " << core_.id() << " Generate failed: " << status;
    }
    grpc::Status gs = ToGrpcStatus(status);
    if (core_.metrics() != nullptr) core_.metrics()->RecordRpc("Generate", GrpcCodeName(gs.error_code()));
    Finish(gs);
  }

  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  std::atomic<int> refs_{2};  // Start and OnDone
  GenerateResponse* const response_;
  CallCore core_;
};

// Server-streaming GenerateStream: one write in flight at a time; tokens that
// arrive meanwhile are coalesced into the next message.
class StreamReactor final : public grpc::ServerWriteReactor<GenerateStreamResponse> {
 public:
  StreamReactor(grpc::CallbackServerContext* ctx, const Deps& deps, std::string id)
      : core_(deps, std::move(id)) {
    ctx->AddInitialMetadata(kRequestIdKey, core_.id());
  }

  // Same lifetime rule as GenerateReactor::Start.
  void Start(const GenerateRequest& req, const grpc::CallbackServerContext& ctx) {
    if (absl::Status st = core_.Submit(req, ctx, std::make_shared<Sink>(this)); !st.ok()) {
      FinishNow(st);
    }
    Unref();
  }

  void OnCancel() override { core_.Cancel(); }

  void OnWriteDone(bool ok) override {
    bool finish = false;
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) broken_ = true;
      finish = MaybeWriteLocked(&status);
    }
    if (finish) FinishNow(status);
  }

  void OnDone() override { Unref(); }

 private:
  class Sink final : public engine::ResultSink {
   public:
    explicit Sink(StreamReactor* r) : r_(r) {}
    void OnTokens(std::span<const int64_t> tokens, std::span<const float> logprobs) override {
      absl::MutexLock lock(&r_->mu_);
      for (int64_t t : tokens) r_->pending_.add_token_ids(static_cast<uint32_t>(t));
      for (float lp : logprobs) r_->pending_.add_logprobs(lp);
      absl::Status unused;
      r_->MaybeWriteLocked(&unused);
    }
    void OnFinish(const engine::Finish& f) override {
      bool finish = false;
      absl::Status status;
      {
        absl::MutexLock lock(&r_->mu_);
        r_->done_ = true;
        r_->final_status_ = f.status;
        if (f.status.ok()) {
          r_->pending_.set_finish_reason(ToProto(f.reason));
          r_->pending_.mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(f.prompt_tokens));
          r_->pending_.mutable_usage()->set_virtual_tokens(static_cast<uint32_t>(f.virtual_tokens));
          r_->pending_.mutable_usage()->set_completion_tokens(
              static_cast<uint32_t>(f.completion_tokens));
          r_->has_final_ = true;
        }
        finish = r_->MaybeWriteLocked(&status);
      }
      if (finish) r_->FinishNow(status);  // may delete the reactor: last statement
    }

   private:
    StreamReactor* const r_;
  };

  // Starts the next write if possible. Returns true when the stream should be
  // finished now with *status (set), which the caller does after unlocking.
  bool MaybeWriteLocked(absl::Status* status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return false;
    const bool has_data = pending_.token_ids_size() > 0 || has_final_;
    if (has_data && !broken_ && (final_status_.ok())) {
      in_flight_ = std::move(pending_);
      pending_.Clear();
      in_flight_.set_request_id(core_.id());
      has_final_ = false;
      writing_ = true;
      StartWrite(&in_flight_);
      return false;
    }
    if (!done_) return false;
    finished_ = true;
    *status = broken_ && final_status_.ok() ? absl::CancelledError("client went away")
                                            : final_status_;
    return true;
  }

  void FinishNow(const absl::Status& status) {
    if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
      LOG(INFO) << "request " << core_.id() << " GenerateStream failed: " << status;
    }
    grpc::Status gs = ToGrpcStatus(status);
    if (core_.metrics() != nullptr) {
      core_.metrics()->RecordRpc("GenerateStream", GrpcCodeName(gs.error_code()));
    }
    Finish(gs);
  }

  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  std::atomic<int> refs_{2};  // Start and OnDone
  CallCore core_;
  absl::Mutex mu_;
  GenerateStreamResponse pending_ ABSL_GUARDED_BY(mu_);
  GenerateStreamResponse in_flight_ ABSL_GUARDED_BY(mu_);
  bool has_final_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
};

bool ValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<engine::GenerationRequest> TranslateGenerateRequest(const GenerateRequest& req) {
  if (!req.has_sampling()) return absl::InvalidArgumentError("sampling is required");
  engine::GenerationRequest out;
  out.prompt.assign(req.prompt_token_ids().begin(), req.prompt_token_ids().end());
  const auto& s = req.sampling();
  out.sampling.max_new_tokens = s.max_new_tokens();
  out.sampling.temperature = s.temperature();
  out.sampling.top_k = s.top_k();
  out.sampling.top_p = s.top_p();
  out.sampling.seed = s.seed();
  out.sampling.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  out.sampling.ignore_eos = s.ignore_eos();
  out.sampling.return_logprobs = s.return_logprobs();
  return out;
}

std::string ChooseRequestId(const grpc::CallbackServerContext& context) {
  const auto& md = context.client_metadata();
  if (auto it = md.find(kRequestIdKey); it != md.end()) {
    std::string_view v(it->second.data(), it->second.size());
    if (ValidRequestId(v)) return std::string(v);
  }
  thread_local absl::BitGen gen;
  return absl::StrFormat("%016x", absl::Uniform<uint64_t>(gen));
}

InferenceService::InferenceService(core::ServerCore* core, metrics::RpcMetrics* metrics,
                                   const CallAuthenticator* auth)
    : core_(core), metrics_(metrics), auth_(auth) {}

grpc::ServerUnaryReactor* InferenceService::Generate(grpc::CallbackServerContext* context,
                                                     const GenerateRequest* request,
                                                     GenerateResponse* response) {
  auto* reactor = new GenerateReactor(context, response, Deps{core_, metrics_, auth_},
                                      ChooseRequestId(*context));
  reactor->Start(*request, *context);
  return reactor;
}

grpc::ServerWriteReactor<GenerateStreamResponse>* InferenceService::GenerateStream(
    grpc::CallbackServerContext* context, const GenerateRequest* request) {
  auto* reactor = new StreamReactor(context, Deps{core_, metrics_, auth_},
                                    ChooseRequestId(*context));
  reactor->Start(*request, *context);
  return reactor;
}

}  // namespace adapterd::rpc
