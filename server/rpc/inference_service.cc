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

// A router in front of several replicas hashes on the x-adapter-id
// metadata, since it cannot read the protobuf body; a call whose metadata
// names another adapter than its body would be routed by the wrong key.
absl::Status CheckRoutingKey(const grpc::CallbackServerContext& ctx, const std::string& adapter) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("x-adapter-id");
  if (it == md.end()) return absl::OkStatus();
  const std::string sent(it->second.data(), it->second.size());
  if (sent == adapter) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "the x-adapter-id metadata ('", sent, "') names another adapter than the request ('", adapter,
      "'); routers hash on the metadata, so it must be the request's adapter_id (for adapters, the first one)"));
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
                      std::shared_ptr<core::GenerateSink> sink) {
    if (absl::Status st = AuthorizeCall(deps_.auth, ctx, Role::kInference); !st.ok()) return st;
    const std::string& key =
        req.adapter_id().empty() && req.adapters_size() > 0 ? req.adapters(0).adapter_id() : req.adapter_id();
    if (absl::Status st = CheckRoutingKey(ctx, key); !st.ok()) return st;
    absl::StatusOr<core::GenerateRequest> r = TranslateGenerateRequest(req);
    if (!r.ok()) return r.status();
    r->engine.id = id_;
    if (const auto deadline = ctx.deadline(); deadline != std::chrono::system_clock::time_point::max()) {
      r->engine.deadline = absl::FromChrono(deadline);
    }
    return Adopt(deps_.core->Generate(req.adapter_id(), *std::move(r), std::move(sink)));
  }
  // The same for Classify.
  absl::Status Submit(const adapterd::v1::ClassifyRequest& req, const grpc::CallbackServerContext& ctx,
                      std::shared_ptr<core::ClassifySink> sink) {
    if (absl::Status st = AuthorizeCall(deps_.auth, ctx, Role::kInference); !st.ok()) return st;
    if (absl::Status st = CheckRoutingKey(ctx, req.adapter_id()); !st.ok()) return st;
    core::ClassifyRequest r = TranslateClassifyRequest(req);
    r.id = id_;
    if (const auto deadline = ctx.deadline(); deadline != std::chrono::system_clock::time_point::max()) {
      r.deadline = absl::FromChrono(deadline);
    }
    return Adopt(deps_.core->Classify(req.adapter_id(), std::move(r), std::move(sink)));
  }
  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (handle_) handle_->Cancel();
  }
  const std::string& id() const { return id_; }
  metrics::RpcMetrics* metrics() const { return deps_.metrics; }

 private:
  // Keeps the engine's handle of a submitted request, cancelling it at once
  // when the client already has.
  absl::Status Adopt(absl::StatusOr<std::shared_ptr<engine::RequestHandle>> h) {
    if (!h.ok()) return h.status();
    absl::MutexLock lock(&mu_);
    handle_ = *std::move(h);
    if (cancelled_) handle_->Cancel();
    return absl::OkStatus();
  }

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
  class Sink final : public core::GenerateSink {
   public:
    explicit Sink(GenerateReactor* r) : r_(r) {}
    void OnChunk(const core::GenerateChunk& c) override {
      for (int64_t t : c.tokens) r_->response_->add_token_ids(static_cast<uint32_t>(t));
      for (float lp : c.logprobs) r_->response_->add_logprobs(lp);
      r_->response_->mutable_text()->append(c.text);
    }
    void OnFinish(const core::GenerateFinish& done) override {
      const engine::Finish& f = done.finish;
      if (done.stop_string.has_value()) r_->response_->set_stop_string(*done.stop_string);
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
  class Sink final : public core::GenerateSink {
   public:
    explicit Sink(StreamReactor* r) : r_(r) {}
    void OnChunk(const core::GenerateChunk& c) override {
      absl::MutexLock lock(&r_->mu_);
      for (int64_t t : c.tokens) r_->pending_.add_token_ids(static_cast<uint32_t>(t));
      for (float lp : c.logprobs) r_->pending_.add_logprobs(lp);
      r_->pending_.mutable_text()->append(c.text);
      absl::Status unused;
      r_->MaybeWriteLocked(&unused);
    }
    void OnFinish(const core::GenerateFinish& done) override {
      const engine::Finish& f = done.finish;
      bool finish = false;
      absl::Status status;
      {
        absl::MutexLock lock(&r_->mu_);
        r_->done_ = true;
        r_->final_status_ = f.status;
        if (f.status.ok()) {
          if (done.stop_string.has_value()) r_->pending_.set_stop_string(*done.stop_string);
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
    const bool has_data = pending_.token_ids_size() > 0 || !pending_.text().empty() || has_final_;
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

// Unary Classify: one answer, from the core's sink.
class ClassifyReactor final : public grpc::ServerUnaryReactor {
 public:
  ClassifyReactor(grpc::CallbackServerContext* ctx, adapterd::v1::ClassifyResponse* response, const Deps& deps,
                  std::string id)
      : response_(response), core_(deps, std::move(id)) {
    ctx->AddInitialMetadata(kRequestIdKey, core_.id());
    response_->set_request_id(core_.id());
  }

  // Same lifetime rule as GenerateReactor::Start.
  void Start(const adapterd::v1::ClassifyRequest& req, const grpc::CallbackServerContext& ctx) {
    if (absl::Status st = core_.Submit(req, ctx, std::make_shared<Sink>(this)); !st.ok()) Complete(st);
    Unref();
  }

  void OnCancel() override { core_.Cancel(); }
  void OnDone() override { Unref(); }

 private:
  class Sink final : public core::ClassifySink {
   public:
    explicit Sink(ClassifyReactor* r) : r_(r) {}
    void OnResult(absl::StatusOr<core::ClassifyResult> result) override {
      if (result.ok()) {
        for (const core::LabelScore& s : result->scores) {
          adapterd::v1::LabelScore* out = r_->response_->add_scores();
          out->set_label(s.label);
          out->set_logit(s.logit);
          out->set_probability(s.probability);
        }
        r_->response_->set_prompt_tokens(static_cast<uint32_t>(result->prompt_tokens));
        r_->response_->set_pooled_index(static_cast<uint32_t>(result->pooled_index));
      }
      r_->Complete(result.status());  // may delete the reactor: last statement
    }

   private:
    ClassifyReactor* const r_;
  };

  void Complete(const absl::Status& status) {
    if (!status.ok() && status.code() != absl::StatusCode::kCancelled) {
      LOG(INFO) << "request " << core_.id() << " Classify failed: " << status;
    }
    grpc::Status gs = ToGrpcStatus(status);
    if (core_.metrics() != nullptr) core_.metrics()->RecordRpc("Classify", GrpcCodeName(gs.error_code()));
    Finish(gs);
  }

  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  std::atomic<int> refs_{2};  // Start and OnDone
  adapterd::v1::ClassifyResponse* const response_;
  CallCore core_;
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

core::ChatPrompt TranslateChat(const adapterd::v1::Chat& chat) {
  core::ChatPrompt out;
  out.add_generation_prompt = chat.add_generation_prompt();
  for (const adapterd::v1::ChatMessage& m : chat.messages()) out.messages.push_back({m.role(), m.content()});
  return out;
}

absl::StatusOr<core::GenerateRequest> TranslateGenerateRequest(const GenerateRequest& req) {
  if (!req.has_sampling()) return absl::InvalidArgumentError("sampling is required");
  core::GenerateRequest out;
  out.engine.prompt.assign(req.prompt_token_ids().begin(), req.prompt_token_ids().end());
  if (req.has_prompt_text()) out.prompt_text = req.prompt_text();
  if (req.has_chat()) out.chat = TranslateChat(req.chat());
  out.skip_special_tokens = !req.has_skip_special_tokens() || req.skip_special_tokens();
  out.add_special_tokens = !req.has_add_special_tokens() || req.add_special_tokens();
  const auto& s = req.sampling();
  engine::SamplingParams& sp = out.engine.sampling;
  sp.max_new_tokens = s.max_new_tokens();
  sp.temperature = s.temperature();
  sp.top_k = s.top_k();
  sp.top_p = s.top_p();
  sp.seed = s.seed();
  sp.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  sp.ignore_eos = s.ignore_eos();
  sp.return_logprobs = s.return_logprobs();
  out.stop.assign(s.stop().begin(), s.stop().end());
  out.include_stop_string = s.include_stop_string();
  for (const adapterd::v1::AdapterWeight& a : req.adapters()) out.adapters.push_back({a.adapter_id(), a.has_weight() ? a.weight() : 1.0});
  return out;
}

core::ClassifyRequest TranslateClassifyRequest(const adapterd::v1::ClassifyRequest& req) {
  core::ClassifyRequest out;
  out.prompt_token_ids.assign(req.prompt_token_ids().begin(), req.prompt_token_ids().end());
  if (req.has_prompt_text()) out.prompt_text = req.prompt_text();
  out.add_special_tokens = !req.has_add_special_tokens() || req.add_special_tokens();
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

grpc::ServerUnaryReactor* InferenceService::Classify(grpc::CallbackServerContext* context,
                                                     const adapterd::v1::ClassifyRequest* request,
                                                     adapterd::v1::ClassifyResponse* response) {
  auto* reactor = new ClassifyReactor(context, response, Deps{core_, metrics_, auth_}, ChooseRequestId(*context));
  reactor->Start(*request, *context);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const adapterd::v1::TokenizeRequest* request,
                                                     adapterd::v1::TokenizeResponse* response) {
  absl::Status st = AuthorizeCall(auth_, *context, Role::kInference);
  if (st.ok()) {
    std::optional<std::string> text;
    if (request->has_text()) text = request->text();
    std::optional<core::ChatPrompt> chat;
    if (request->has_chat()) chat = TranslateChat(request->chat());
    absl::StatusOr<std::vector<int32_t>> ids =
        core_->Tokenize(text, chat, !request->has_add_special_tokens() || request->add_special_tokens());
    if (ids.ok()) {
      for (int32_t id : *ids) response->add_token_ids(static_cast<uint32_t>(id));
    }
    st = ids.status();
  }
  return Finish(context, "Tokenize", st);
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* context,
                                                       const adapterd::v1::DetokenizeRequest* request,
                                                       adapterd::v1::DetokenizeResponse* response) {
  absl::Status st = AuthorizeCall(auth_, *context, Role::kInference);
  if (st.ok()) {
    const std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
    absl::StatusOr<std::string> text =
        core_->Detokenize(ids, !request->has_skip_special_tokens() || request->skip_special_tokens());
    if (text.ok()) response->set_text(*std::move(text));
    st = text.status();
  }
  return Finish(context, "Detokenize", st);
}

grpc::ServerUnaryReactor* InferenceService::Finish(grpc::CallbackServerContext* context, const char* rpc,
                                                   const absl::Status& status) {
  grpc::Status gs = ToGrpcStatus(status);
  if (metrics_ != nullptr) metrics_->RecordRpc(rpc, GrpcCodeName(gs.error_code()));
  auto* reactor = context->DefaultReactor();
  reactor->Finish(gs);
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
