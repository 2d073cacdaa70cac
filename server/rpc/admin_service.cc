#include "server/rpc/admin_service.h"

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "adapters/adapter_files.h"
#include "server/rpc/grpc_status.h"

namespace adapterd::rpc {

using adapterd::v1::AdapterInfo;

void ToProto(const adapters::AdapterInfo& info, AdapterInfo* out) {
  out->set_adapter_id(info.id);
  out->set_state(info.state == adapters::AdapterState::kReady ? adapterd::v1::ADAPTER_STATE_READY
                                                              : adapterd::v1::ADAPTER_STATE_LOADING);
  const adapters::AdapterSummary& s = info.summary;
  out->set_type(s.type);
  for (int64_t r : s.ranks) out->add_ranks(static_cast<uint32_t>(r));
  for (const std::string& t : s.target_modules) out->add_target_modules(t);
  for (const std::string& t : s.feedforward_modules) out->add_feedforward_modules(t);
  for (int64_t w : s.bottleneck_widths) out->add_bottleneck_widths(static_cast<uint32_t>(w));
  for (const std::string& l : s.locations) out->add_locations(l);
  out->set_non_linearity(s.non_linearity);
  out->set_parallel(s.parallel);
  out->set_num_virtual_tokens(static_cast<uint32_t>(s.num_virtual_tokens));
  if (s.type == "lora" || s.type == "dora" || s.type == "adalora") {
    out->set_task_type(s.task_type);
    out->set_bias(s.bias);
  }
  for (const std::string& l : s.labels) out->add_labels(l);
  for (const std::string& m : s.modules_to_save) out->add_modules_to_save(m);
  out->set_trainable_tokens(static_cast<uint32_t>(s.trainable_tokens));
  out->set_lora_bias(s.lora_bias);
  out->set_source(info.source);
  out->set_bytes(static_cast<uint64_t>(info.bytes));
  if (info.state == adapters::AdapterState::kReady) {
    out->set_loaded_at_unix_ms(absl::ToUnixMillis(info.loaded_at));
    out->set_load_seconds(absl::ToDoubleSeconds(info.load_duration));
  }
  out->set_requests_served(static_cast<uint64_t>(info.requests_served));
  out->set_tokens_generated(static_cast<uint64_t>(info.tokens_generated));
  if (info.state == adapters::AdapterState::kReady) out->set_tier(std::string(adapters::TierName(info.tier)));
  out->set_pinned(info.pinned);
}

AdminService::AdminService(core::ServerCore* core, metrics::RpcMetrics* metrics, AdminOptions options)
    : core_(core), metrics_(metrics), options_(options) {}

absl::Status AdminService::Authorize(const grpc::CallbackServerContext& ctx) const {
  return AuthorizeCall(options_.auth, ctx, Role::kAdmin);
}

namespace {

// The core's load result as the response, then `complete` with its status.
core::LoadDone Respond(AdapterInfo* resp, std::function<void(const absl::Status&)> complete) {
  return [resp, complete = std::move(complete)](absl::StatusOr<adapters::AdapterInfo> result) {
    if (result.ok()) ToProto(*result, resp);
    complete(result.status());
  };
}

}  // namespace

// Finishes when the registry's loader thread reports; deleted once both the
// handler and OnDone are over (the load may finish before Start returns).
class AdminService::LoadReactor final : public grpc::ServerUnaryReactor {
 public:
  LoadReactor(AdminService* service, AdapterInfo* resp) : service_(service), resp_(resp) {}

  void Start(std::string id, std::string path, bool replace, bool pin) {
    service_->core_->LoadAdapter(std::move(id), std::move(path), replace, pin,
                                 Respond(resp_, [this](const absl::Status& st) { Complete(st); }));
    Unref();
  }
  void OnDone() override { Unref(); }

 private:
  void Complete(const absl::Status& st) {
    grpc::Status gs = ToGrpcStatus(st);
    if (service_->metrics_ != nullptr) {
      service_->metrics_->RecordRpc("LoadAdapter", GrpcCodeName(gs.error_code()));
    }
    Finish(gs);
  }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  std::atomic<int> refs_{2};
  AdminService* const service_;
  AdapterInfo* const resp_;
};

// Collects an upload's chunks, bounded by max_upload_bytes, then loads it.
class AdminService::UploadReactor final
    : public grpc::ServerReadReactor<adapterd::v1::UploadAdapterRequest> {
 public:
  UploadReactor(AdminService* service, grpc::CallbackServerContext* ctx, AdapterInfo* resp)
      : service_(service), ctx_(ctx), resp_(resp) {
    if (absl::Status st = service_->Authorize(*ctx); !st.ok()) {
      Complete(st);
      return;
    }
    StartRead(&msg_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) return EndOfUpload();
    if (++messages_ > service_->options_.max_upload_messages) {
      return Fail(absl::ResourceExhaustedError(absl::StrCat(
          "upload exceeds the limit of ", service_->options_.max_upload_messages, " messages")));
    }
    if (msg_.has_header()) {
      if (seen_header_) return Fail(absl::InvalidArgumentError("header must be sent once, first"));
      seen_header_ = true;
      id_ = msg_.header().adapter_id();
      replace_ = msg_.header().replace();
      pin_ = msg_.header().pin();
      if (absl::Status s = adapters::AdapterRegistry::ValidateId(id_); !s.ok()) return Fail(s);
    } else if (msg_.has_chunk()) {
      if (!seen_header_) return Fail(absl::InvalidArgumentError("the first message must be a header"));
      const std::string& name = msg_.chunk().file_name();
      if (!adapters::IsAdapterFileName(name)) {
        return Fail(absl::InvalidArgumentError(absl::StrCat("chunk.file_name '", name.substr(0, 100),
                                                            "' must be ", adapters::kConfigFile, ", ",
                                                            adapters::kWeightsFile, ", ",
                                                            adapters::kAdapterHubWeightsFile, " or ",
                                                            adapters::kModelConfigFile)));
      }
      total_ += static_cast<int64_t>(msg_.chunk().data().size());
      if (total_ > service_->options_.max_upload_bytes) {
        return Fail(absl::ResourceExhaustedError(absl::StrCat(
            "upload exceeds the limit of ", service_->options_.max_upload_bytes, " bytes")));
      }
      files_[name].append(msg_.chunk().data());
    } else {
      return Fail(absl::InvalidArgumentError("a message carries neither header nor chunk"));
    }
    StartRead(&msg_);
  }

  void OnDone() override { delete this; }

 private:
  void EndOfUpload() {
    // A cancelled or broken stream also ends reads: never load a partial upload.
    if (ctx_->IsCancelled()) return Complete(absl::CancelledError("upload cancelled"));
    if (!seen_header_) return Fail(absl::InvalidArgumentError("upload carried no header"));
    // Complete may delete this: it is the callback's last statement.
    service_->core_->UploadAdapter(std::move(id_), adapters::UploadSource{std::move(files_)}, replace_, pin_,
                                   Respond(resp_, [this](const absl::Status& st) { Complete(st); }));
  }

  void Fail(const absl::Status& st) { Complete(st); }
  void Complete(const absl::Status& st) {
    grpc::Status gs = ToGrpcStatus(st);
    if (service_->metrics_ != nullptr) {
      service_->metrics_->RecordRpc("UploadAdapter", GrpcCodeName(gs.error_code()));
    }
    Finish(gs);
  }
  AdminService* const service_;
  grpc::CallbackServerContext* const ctx_;
  AdapterInfo* const resp_;
  adapterd::v1::UploadAdapterRequest msg_;
  bool seen_header_ = false;
  std::string id_;
  bool replace_ = false;
  bool pin_ = false;
  int64_t total_ = 0;
  int64_t messages_ = 0;
  std::map<std::string, std::string> files_;
};

grpc::ServerUnaryReactor* AdminService::Done(grpc::CallbackServerContext* ctx, const char* rpc,
                                             const absl::Status& status) {
  grpc::Status gs = ToGrpcStatus(status);
  if (metrics_ != nullptr) metrics_->RecordRpc(rpc, GrpcCodeName(gs.error_code()));
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(gs);
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::LoadAdapter(grpc::CallbackServerContext* ctx,
                                                    const adapterd::v1::LoadAdapterRequest* req,
                                                    AdapterInfo* resp) {
  if (absl::Status st = Authorize(*ctx); !st.ok()) return Done(ctx, "LoadAdapter", st);
  auto* reactor = new LoadReactor(this, resp);
  reactor->Start(req->adapter_id(), req->path(), req->replace(), req->pin());
  return reactor;
}

grpc::ServerReadReactor<adapterd::v1::UploadAdapterRequest>* AdminService::UploadAdapter(
    grpc::CallbackServerContext* ctx, AdapterInfo* resp) {
  return new UploadReactor(this, ctx, resp);
}

grpc::ServerUnaryReactor* AdminService::UnloadAdapter(grpc::CallbackServerContext* ctx,
                                                      const adapterd::v1::UnloadAdapterRequest* req,
                                                      adapterd::v1::UnloadAdapterResponse* resp) {
  if (absl::Status st = Authorize(*ctx); !st.ok()) return Done(ctx, "UnloadAdapter", st);
  return Done(ctx, "UnloadAdapter", core_->UnloadAdapter(req->adapter_id(), req->keep_on_disk()));
}

grpc::ServerUnaryReactor* AdminService::ListAdapters(grpc::CallbackServerContext* ctx,
                                                     const adapterd::v1::ListAdaptersRequest* req,
                                                     adapterd::v1::ListAdaptersResponse* resp) {
  if (absl::Status st = Authorize(*ctx); !st.ok()) return Done(ctx, "ListAdapters", st);
  for (const adapters::AdapterInfo& info : core_->ListAdapters()) ToProto(info, resp->add_adapters());
  return Done(ctx, "ListAdapters", absl::OkStatus());
}

grpc::ServerUnaryReactor* AdminService::GetAdapter(grpc::CallbackServerContext* ctx,
                                                   const adapterd::v1::GetAdapterRequest* req,
                                                   AdapterInfo* resp) {
  if (absl::Status st = Authorize(*ctx); !st.ok()) return Done(ctx, "GetAdapter", st);
  absl::StatusOr<adapters::AdapterInfo> info = core_->GetAdapter(req->adapter_id());
  if (info.ok()) ToProto(*info, resp);
  return Done(ctx, "GetAdapter", info.status());
}

}  // namespace adapterd::rpc
