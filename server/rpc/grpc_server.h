// The gRPC listener: services, health, reflection and graceful shutdown.
#ifndef ADAPTERD_SERVER_RPC_GRPC_SERVER_H_
#define ADAPTERD_SERVER_RPC_GRPC_SERVER_H_

#include <grpcpp/security/server_credentials.h>
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
  // TLS: PEM certificate chain and private key. Both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  // PEM CA bundle for client certificates. When set, a client certificate
  // is requested and, if presented, must verify against it; names of
  // verified certificates can then grant roles (see CallAuthenticator).
  std::string tls_client_ca_file;
  // Serve without TLS. Must be chosen explicitly: without a certificate and
  // without this, Start() refuses to listen.
  bool plaintext = false;
};

// Owns one grpc::Server with the given services, on TLS or (explicitly)
// plaintext credentials, the standard
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

  // Marks the server NOT_SERVING in grpc.health.v1 while it keeps serving,
  // so that load balancers move traffic away during a drain.
  void MarkNotServing();

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

// The listener credentials `options` ask for, with errors that name the flag
// or file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const GrpcServerOptions& options);

// True for 127.0.0.0/8, ::1 and "localhost" (with or without a port).
bool IsLoopbackAddress(const std::string& host_port);

}  // namespace adapterd::rpc

#endif  // ADAPTERD_SERVER_RPC_GRPC_SERVER_H_
