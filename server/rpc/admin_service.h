// gRPC transport for adapterd.v1.Admin.
#ifndef ADAPTERD_SERVER_RPC_ADMIN_SERVICE_H_
#define ADAPTERD_SERVER_RPC_ADMIN_SERVICE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "adapterd/v1/admin.grpc.pb.h"
#include "server/core/server_core.h"
#include "server/metrics/rpc_metrics.h"
#include "server/rpc/call_auth.h"

namespace adapterd::rpc {

struct AdminOptions {
  int64_t max_upload_bytes = int64_t{1} << 30;  // all files of one upload together
  int64_t max_upload_messages = 1 << 20;        // messages of one upload stream
  // Who may call; null lets every caller in (only for in-process tests).
  const CallAuthenticator* auth = nullptr;
};

// Translates Admin RPCs into ServerCore calls. Every call must hold the
// admin role (see CallAuthenticator) before its request is looked at. Loads
// complete on the registry's loader thread, which finishes the waiting
// reactor; no handler blocks. Upload framing (message and byte limits,
// file names) is checked here; everything else is the core's. Thread-safe;
// the core, metrics and authenticator must outlive it.
class AdminService final : public adapterd::v1::Admin::CallbackService {
 public:
  AdminService(core::ServerCore* core, metrics::RpcMetrics* metrics, AdminOptions options = {});

  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* ctx,
                                        const adapterd::v1::LoadAdapterRequest* req,
                                        adapterd::v1::AdapterInfo* resp) override;
  grpc::ServerReadReactor<adapterd::v1::UploadAdapterRequest>* UploadAdapter(
      grpc::CallbackServerContext* ctx, adapterd::v1::AdapterInfo* resp) override;
  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* ctx,
                                          const adapterd::v1::UnloadAdapterRequest* req,
                                          adapterd::v1::UnloadAdapterResponse* resp) override;
  grpc::ServerUnaryReactor* ListAdapters(grpc::CallbackServerContext* ctx,
                                         const adapterd::v1::ListAdaptersRequest* req,
                                         adapterd::v1::ListAdaptersResponse* resp) override;
  grpc::ServerUnaryReactor* GetAdapter(grpc::CallbackServerContext* ctx,
                                       const adapterd::v1::GetAdapterRequest* req,
                                       adapterd::v1::AdapterInfo* resp) override;

 private:
  class LoadReactor;
  class UploadReactor;
  grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const char* rpc,
                                 const absl::Status& status);
  absl::Status Authorize(const grpc::CallbackServerContext& ctx) const;

  core::ServerCore* const core_;
  metrics::RpcMetrics* const metrics_;
  const AdminOptions options_;
};

// Fills an AdapterInfo message from the registry's view.
void ToProto(const adapters::AdapterInfo& info, adapterd::v1::AdapterInfo* out);

}  // namespace adapterd::rpc

#endif  // ADAPTERD_SERVER_RPC_ADMIN_SERVICE_H_
