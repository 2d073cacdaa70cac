// gRPC transport for adapterd.v1.Inference.
#ifndef ADAPTERD_SERVER_RPC_INFERENCE_SERVICE_H_
#define ADAPTERD_SERVER_RPC_INFERENCE_SERVICE_H_

#include <string>

#include "adapterd/v1/inference.grpc.pb.h"
#include "adapters/adapter_registry.h"
#include "server/engine/engine.h"
#include "server/metrics/server_metrics.h"
#include "server/rpc/call_auth.h"

namespace adapterd::rpc {

// Translates Inference RPCs into engine requests and engine results back
// into responses; it holds no model state. Handlers never block: each call
// is a callback reactor that submits to the engine and is completed by the
// engine's ResultSink calls. A client cancel, disconnect or deadline cancels
// the engine request. An adapter id is resolved once per request; the request
// holds the adapter until it finishes. With an authenticator, every call
// must hold the inference role before anything else is looked at.
// Thread-safe; the engine, registry, metrics and authenticator must outlive
// it.
class InferenceService final : public adapterd::v1::Inference::CallbackService {
 public:
  InferenceService(engine::Engine* engine, const adapters::AdapterRegistry* registry,
                   metrics::ServerMetrics* metrics, const CallAuthenticator* auth = nullptr);

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const adapterd::v1::GenerateRequest* request,
                                     adapterd::v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<adapterd::v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context,
      const adapterd::v1::GenerateRequest* request) override;

 private:
  engine::Engine* const engine_;
  const adapters::AdapterRegistry* const registry_;
  metrics::ServerMetrics* const metrics_;
  const CallAuthenticator* const auth_;
};

// The engine request that `request` asks for, without its adapter (resolved
// by the caller), id and deadline. INVALID_ARGUMENT when sampling is
// missing; everything else is checked by engine::ValidateRequest. Pure;
// exposed for tests and fuzzing.
absl::StatusOr<engine::GenerationRequest> TranslateGenerateRequest(const adapterd::v1::GenerateRequest& request);

// Picks the request id: the client's "x-request-id" when it is 1-64 characters
// of [A-Za-z0-9._-], otherwise a fresh random one. Exposed for tests.
std::string ChooseRequestId(const grpc::CallbackServerContext& context);

}  // namespace adapterd::rpc

#endif  // ADAPTERD_SERVER_RPC_INFERENCE_SERVICE_H_
