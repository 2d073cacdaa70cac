// One HTTP/1.1 connection of the listener: parsing, keep-alive, timeouts,
// and the writes of whole and streamed responses.
#ifndef ADAPTERD_SERVER_HTTP_HTTP_CONNECTION_H_
#define ADAPTERD_SERVER_HTTP_HTTP_CONNECTION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "prometheus/gauge.h"
#include "server/http/http_exchange.h"
#include "server/metrics/http_metrics.h"

namespace adapterd::http {

// What every connection of one listener reads and where it reports. Owned
// by the HttpServer, which outlives its connections. The limits are
// immutable after start-up; the bookkeeping is guarded by `mu`.
struct ConnectionContext {
  HttpHandler* handler = nullptr;
  boost::asio::ssl::context* tls = nullptr;  // null: plaintext
  int64_t max_body_bytes = 0;
  int64_t max_header_bytes = 0;
  absl::Duration idle_timeout;
  absl::Duration write_timeout;
  metrics::HttpMetrics* metrics = nullptr;  // may be null
  prometheus::Gauge* connections_gauge = nullptr;  // may be null
  // Set once a drain begins: responses ask clients to close (Connection: close).
  std::atomic<bool> draining{false};

  absl::Mutex mu;
  // Exchanges whose answer is not yet complete, for the shutdown's grace.
  int64_t exchanges ABSL_GUARDED_BY(mu) = 0;
  int64_t connections ABSL_GUARDED_BY(mu) = 0;

  void RecordAbort(const char* reason) const {
    if (metrics != nullptr) metrics->RecordAbort(reason);
  }
};

// The listener's handle on one connection. The connection lives as long as
// an operation of its own or a caller holds it; every method may be called
// from any thread and only posts onto the connection's strand.
class Connection {
 public:
  virtual ~Connection() = default;
  // Closes the connection at once (its exchange, if any, is abandoned with
  // reason "shutdown"), or, with `only_if_idle`, only when no request is
  // being read or answered.
  virtual void Close(bool only_if_idle) = 0;
};

// Starts serving `socket` (TLS when context->tls is set) and returns the
// connection's handle.
std::shared_ptr<Connection> StartConnection(boost::asio::ip::tcp::socket socket, ConnectionContext* context);

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_HTTP_CONNECTION_H_
