#include "server/http/http_server.h"

#include <pthread.h>

#include <optional>
#include <utility>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "absl/log/log.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "server/http/http_connection.h"
#include "server/http/tls_context.h"

namespace adapterd::http {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using ErrorCode = boost::system::error_code;

// Everything the I/O threads touch. Members are destroyed in reverse order:
// the io_context (and with it every pending handler, which may hold the
// last reference to a connection) goes before the connection context and
// the TLS context that connections read.
struct ListenerState {
  std::unique_ptr<net::ssl::context> tls;
  ConnectionContext ctx;
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  // Used on its strand only.
  std::optional<tcp::acceptor> acceptor;
  std::optional<net::steady_timer> retry_timer;
  int64_t max_connections = 0;
  int send_buffer_bytes = 0;
  std::string name;

  absl::Mutex mu;
  std::vector<std::weak_ptr<Connection>> connections ABSL_GUARDED_BY(mu);

  explicit ListenerState(int threads) : ioc(threads) {}

  void Track(std::shared_ptr<Connection> c) ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    if (connections.size() > 64 && connections.size() > 2 * static_cast<size_t>(LiveHint())) {
      std::erase_if(connections, [](const std::weak_ptr<Connection>& w) { return w.expired(); });
    }
    connections.push_back(std::move(c));
  }
  int64_t LiveHint() ABSL_LOCKS_EXCLUDED(ctx.mu) {
    absl::MutexLock lock(&ctx.mu);
    return ctx.connections;
  }
  void CloseAll(bool only_if_idle) ABSL_LOCKS_EXCLUDED(mu) {
    std::vector<std::shared_ptr<Connection>> live;
    {
      absl::MutexLock lock(&mu);
      for (const auto& w : connections) {
        if (std::shared_ptr<Connection> c = w.lock()) live.push_back(std::move(c));
      }
    }
    for (const auto& c : live) c->Close(only_if_idle);
  }

  void Accept() {
    acceptor->async_accept(net::make_strand(ioc), [this](const ErrorCode& ec, tcp::socket socket) {
      if (!acceptor->is_open()) return;
      if (ec) {
        // Out of descriptors, usually: try again shortly rather than spin.
        LOG_EVERY_N_SEC(WARNING, 10) << name << " listener: accept failed: " << ec.message();
        retry_timer->expires_after(std::chrono::milliseconds(50));
        retry_timer->async_wait([this](const ErrorCode& wait_ec) {
          if (!wait_ec && acceptor->is_open()) Accept();
        });
        return;
      }
      if (LiveHint() >= max_connections) {
        LOG_EVERY_N_SEC(WARNING, 10) << name << " listener: " << max_connections
                                     << " connections are open (the limit); closing a new one";
        ErrorCode ignored;
        socket.close(ignored);
      } else {
        ErrorCode ignored;
        socket.set_option(tcp::no_delay(true), ignored);  // SSE events are small and latency-bound
        if (send_buffer_bytes > 0) socket.set_option(net::socket_base::send_buffer_size(send_buffer_bytes), ignored);
        Track(StartConnection(std::move(socket), &ctx));
      }
      Accept();
    });
  }
};

absl::StatusOr<std::pair<std::string, int>> ParseListenAddress(const std::string& address) {
  std::string host;
  std::string port_text;
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("address '", address, "' must be [IPv6]:PORT"));
    }
    host = address.substr(1, close - 1);
    port_text = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("address '", address, "' must be HOST:PORT"));
    }
    host = address.substr(0, colon);
    port_text = address.substr(colon + 1);
  }
  int port = -1;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("address '", address, "' has no valid port"));
  }
  if (host.empty()) host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  ErrorCode ec;
  net::ip::make_address(host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("address '", address, "' needs a numeric IP host"));
  return std::make_pair(host, port);
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                             HttpHandler* handler) {
  std::unique_ptr<HttpServer> server(new HttpServer());
  if (absl::Status st = server->Listen(options, handler); !st.ok()) return st;
  return server;
}

absl::Status HttpServer::Listen(const HttpServerOptions& options, HttpHandler* handler) {
  if (options.threads < 1 || options.threads > 64) {
    return absl::InvalidArgumentError(absl::StrCat("--http_threads must be in [1, 64], not ", options.threads));
  }
  if (options.max_body_bytes < 1) return absl::InvalidArgumentError("--http_max_body_bytes must be positive");
  absl::StatusOr<std::pair<std::string, int>> where = ParseListenAddress(options.listen_address);
  if (!where.ok()) return where.status();
  state_ = std::make_unique<ListenerState>(options.threads);
  ListenerState& s = *state_;
  s.name = options.name;
  s.max_connections = options.max_connections;
  s.send_buffer_bytes = options.send_buffer_bytes;
  if (!options.plaintext) {
    if (options.tls_cert_file.empty()) {
      return absl::FailedPreconditionError(
          "the HTTP listener needs --tls_cert_file and --tls_key_file, or --plaintext to serve without TLS");
    }
    absl::StatusOr<std::unique_ptr<net::ssl::context>> tls =
        MakeServerTlsContext(options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file);
    if (!tls.ok()) return tls.status();
    s.tls = *std::move(tls);
  }
  s.ctx.handler = handler;
  s.ctx.tls = s.tls.get();
  s.ctx.max_body_bytes = options.max_body_bytes;
  s.ctx.max_header_bytes = options.max_header_bytes;
  s.ctx.idle_timeout = options.idle_timeout;
  s.ctx.write_timeout = options.write_timeout;
  s.ctx.metrics = options.metrics;
  if (options.metrics != nullptr) s.ctx.connections_gauge = &options.metrics->connections(options.name);

  const tcp::endpoint endpoint(net::ip::make_address(where->first), static_cast<unsigned short>(where->second));
  s.acceptor.emplace(net::make_strand(s.ioc));
  s.retry_timer.emplace(s.acceptor->get_executor());
  ErrorCode ec;
  s.acceptor->open(endpoint.protocol(), ec);
  if (!ec) s.acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor->bind(endpoint, ec);
  if (!ec) s.acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for ", options.name, " HTTP on ", options.listen_address, ": ", ec.message()));
  }
  const tcp::endpoint bound = s.acceptor->local_endpoint();
  address_ = bound.address().is_v6() ? absl::StrCat("[", bound.address().to_string(), "]:", bound.port())
                                     : absl::StrCat(bound.address().to_string(), ":", bound.port());
  s.work.emplace(s.ioc.get_executor());
  net::post(s.acceptor->get_executor(), [&s] { s.Accept(); });
  for (int i = 0; i < options.threads; ++i) {
    threads_.emplace_back([&s, name = options.name] {
      pthread_setname_np(pthread_self(), ("http-" + name).substr(0, 15).c_str());
      s.ioc.run();
    });
  }
  LOG(INFO) << options.name << " HTTP listening on " << address_ << (s.tls ? " (TLS)" : " (plaintext)") << ", "
            << options.threads << " I/O threads";
  return absl::OkStatus();
}

void HttpServer::BeginDrain() {
  if (state_ != nullptr) state_->ctx.draining.store(true);
}

void HttpServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_ || state_ == nullptr) return;
    stopped_ = true;
  }
  ListenerState& s = *state_;
  s.ctx.draining.store(true);
  absl::Notification closed;
  net::post(s.acceptor->get_executor(), [&s, &closed] {
    ErrorCode ignored;
    s.acceptor->close(ignored);
    s.retry_timer->cancel();
    closed.Notify();
  });
  closed.WaitForNotification();
  s.CloseAll(/*only_if_idle=*/true);
  const absl::Time deadline = absl::Now() + grace;
  {
    absl::MutexLock lock(&s.ctx.mu);
    auto answered = [&s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.ctx.mu) { return s.ctx.exchanges == 0; };
    s.ctx.mu.AwaitWithDeadline(absl::Condition(&answered), deadline);
  }
  s.CloseAll(/*only_if_idle=*/false);
  {
    absl::MutexLock lock(&s.ctx.mu);
    auto gone = [&s]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.ctx.mu) { return s.ctx.connections == 0; };
    s.ctx.mu.AwaitWithTimeout(absl::Condition(&gone), absl::Seconds(5));
  }
  s.work.reset();
  s.ioc.stop();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

HttpServer::~HttpServer() { Shutdown(absl::ZeroDuration()); }

}  // namespace adapterd::http
