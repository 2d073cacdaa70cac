// Serves a prometheus-cpp registry at GET /metrics.
#ifndef ADAPTERD_SERVER_METRICS_METRICS_HTTP_SERVER_H_
#define ADAPTERD_SERVER_METRICS_METRICS_HTTP_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace adapterd::metrics {

// A minimal HTTP/1.x server for Prometheus scrapes: GET /metrics answers with
// the text exposition format, anything else with 404 or 405, one connection
// at a time on its own thread. It exists because prometheus-cpp's Exposer
// runs civetweb workers on fixed 100 KiB stacks, and the static TLS of
// LibTorch in the same process leaves them too little stack: the first
// scrape crashed the server. Thread-safe; Stop() (or the destructor) joins
// the thread.
class MetricsHttpServer {
 public:
  // `address` is host:port with a numeric IPv4 host; port 0 picks a free port.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpServer();

  // The bound address, with the real port.
  const std::string& address() const { return address_; }
  void Stop();

 private:
  MetricsHttpServer() = default;
  void Serve();
  void HandleConnection(int fd);

  std::shared_ptr<prometheus::Registry> registry_;
  int listen_fd_ = -1;
  std::string address_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace adapterd::metrics

#endif  // ADAPTERD_SERVER_METRICS_METRICS_HTTP_SERVER_H_
