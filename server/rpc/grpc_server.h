// The gRPC listener: services, health, reflection and graceful shutdown.
#ifndef ADAPTERD_SERVER_RPC_GRPC_SERVER_H_
#define ADAPTERD_SERVER_RPC_GRPC_SERVER_H_

#include <grpcpp/server.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace adapterd::rpc {

struct GrpcServerOptions {
  std::string listen_address = "127.0.0.1:50051";  // port 0 picks a free port
  int max_receive_message_bytes = 4 << 20;
  int max_send_message_bytes = 4 << 20;
  // Names reported SERVING by grpc.health.v1 besides the overall "" status.
  std::vector<std::string> health_services;
};

// Owns one grpc::Server with the given services, the standard
// grpc.health.v1.Health service (overall and per service) and server
// reflection. The services must outlive it. Not thread-safe: the thread
// that started it shuts it down.
class GrpcServer {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const GrpcServerOptions& options, const std::vector<grpc::Service*>& services);
  ~GrpcServer();

  int port() const { return port_; }
  const std::string& address() const { return address_; }

  // Marks the server NOT_SERVING, stops accepting calls (new calls get
  // UNAVAILABLE), waits up to `grace` for in-flight calls and then cancels
  // the rest. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  GrpcServer() = default;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::string> service_names_;
  int port_ = 0;
  std::string address_;
};

}  // namespace adapterd::rpc

#endif  // ADAPTERD_SERVER_RPC_GRPC_SERVER_H_
