// gRPC transport for adapterd.v1.Inference.
#ifndef ADAPTERD_SERVER_RPC_INFERENCE_SERVICE_H_
#define ADAPTERD_SERVER_RPC_INFERENCE_SERVICE_H_

#include <string>

#include "adapterd/v1/inference.grpc.pb.h"
#include "server/core/classify_request.h"
#include "server/core/generate_request.h"
#include "server/core/server_core.h"
#include "server/engine/request.h"
#include "server/metrics/rpc_metrics.h"
#include "server/rpc/call_auth.h"

namespace adapterd::rpc {

// Translates Inference RPCs into ServerCore::Generate (and Classify,
// Tokenize, Detokenize) calls and their
// results back into responses; it holds no model or adapter state. Handlers
// never block: each call is a callback reactor that the core's result sink
// completes. A client cancel, disconnect or deadline cancels the request.
// With an authenticator, every call must hold the inference role before
// anything else is looked at. Thread-safe; the core, metrics and
// authenticator must outlive it.
class InferenceService final : public adapterd::v1::Inference::CallbackService {
 public:
  InferenceService(core::ServerCore* core, metrics::RpcMetrics* metrics, const CallAuthenticator* auth = nullptr);

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const adapterd::v1::GenerateRequest* request,
                                     adapterd::v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<adapterd::v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context,
      const adapterd::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* context,
                                     const adapterd::v1::ClassifyRequest* request,
                                     adapterd::v1::ClassifyResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const adapterd::v1::TokenizeRequest* request,
                                     adapterd::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const adapterd::v1::DetokenizeRequest* request,
                                       adapterd::v1::DetokenizeResponse* response) override;

 private:
  // Finishes a unary call at once, recording it.
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const char* rpc, const absl::Status& status);

  core::ServerCore* const core_;
  metrics::RpcMetrics* const metrics_;
  const CallAuthenticator* const auth_;
};

// The core request that `request` asks for, without its id and deadline;
// its adapter is `request.adapter_id()`, which the core resolves.
// INVALID_ARGUMENT when sampling is missing; everything else is checked by
// the core (the prompt) and engine::ValidateRequest. Pure; exposed for
// tests and fuzzing.
absl::StatusOr<core::GenerateRequest> TranslateGenerateRequest(const adapterd::v1::GenerateRequest& request);

// The core request that `request` asks for, without its id and deadline;
// the core checks the prompt. Pure; exposed for tests and fuzzing.
core::ClassifyRequest TranslateClassifyRequest(const adapterd::v1::ClassifyRequest& request);

// Picks the request id: the client's "x-request-id" when it is 1-64 characters
// of [A-Za-z0-9._-], otherwise a fresh random one. Exposed for tests.
std::string ChooseRequestId(const grpc::CallbackServerContext& context);

}  // namespace adapterd::rpc

#endif  // ADAPTERD_SERVER_RPC_INFERENCE_SERVICE_H_
