// The HTTP listener: Boost.Beast on a small fixed pool of I/O threads.
#ifndef ADAPTERD_SERVER_HTTP_HTTP_SERVER_H_
#define ADAPTERD_SERVER_HTTP_HTTP_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/http/http_exchange.h"
#include "server/metrics/http_metrics.h"

namespace adapterd::http {

struct HttpServerOptions {
  std::string listen_address;  // host:port; port 0 picks a free port
  std::string name = "api";    // for logs and the connections gauge's listener label
  int threads = 2;             // I/O threads, shared by every connection
  int64_t max_body_bytes = int64_t{4} << 20;
  int64_t max_header_bytes = 16 << 10;
  // How long a request may take to arrive, and a kept-alive connection may
  // sit idle between requests.
  absl::Duration idle_timeout = absl::Seconds(60);
  // How long one write may take; a client that does not read for longer
  // has its connection closed and its exchange abandoned.
  absl::Duration write_timeout = absl::Seconds(30);
  int64_t max_connections = 10000;  // beyond it, new connections are closed at once
  // SO_SNDBUF of each connection, bounding what the kernel holds for a
  // client that does not read; 0 leaves the kernel's autotuning.
  int send_buffer_bytes = 0;
  // TLS, as for gRPC: certificate and key (both or neither), optional
  // client CA; plaintext only when chosen explicitly.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  bool plaintext = false;
  metrics::HttpMetrics* metrics = nullptr;  // may be null
};

struct ListenerState;

// Accepts HTTP/1.1 connections (TLS or, explicitly, plaintext) and hands each
// request to `handler`. A fixed pool of `threads` I/O threads runs every
// connection's asynchronous reads, writes and timers; no thread is made per
// connection or per request, and a handler must never block one. Each
// connection runs on its own strand. Bodies are capped by max_body_bytes
// (413) and headers by max_header_bytes (431).
//
// The handler must outlive the server. Start, BeginDrain and Shutdown may be
// called from any thread; Shutdown joins the I/O threads and must not be
// called from one of them.
class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                           HttpHandler* handler);
  ~HttpServer();  // Shutdown with no grace

  // The bound address, with the real port.
  const std::string& address() const { return address_; }

  // From now on every response asks its client to close the connection, so
  // that clients reconnect elsewhere during a drain. Connections are still
  // accepted and requests still reach the handler, which answers new work
  // with 503 while the core drains.
  void BeginDrain();
  // Stops accepting connections and closes idle ones, lets answers in
  // progress complete for up to `grace`, then closes every connection
  // (abandoning what is left) and joins the I/O threads. Idempotent.
  void Shutdown(absl::Duration grace) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  HttpServer() = default;
  absl::Status Listen(const HttpServerOptions& options, HttpHandler* handler);

  std::string address_;
  // Declared before the threads: outlives them.
  std::unique_ptr<ListenerState> state_;
  std::vector<std::thread> threads_;
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

// Parses "host:port", "[v6]:port" or ":port" (any address); "localhost"
// means 127.0.0.1. Exposed for tests.
absl::StatusOr<std::pair<std::string, int>> ParseListenAddress(const std::string& address);

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_HTTP_SERVER_H_
