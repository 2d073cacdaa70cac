#include "server/http/http_connection.h"

#include <array>
#include <chrono>
#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/http/http_error.h"
#include "server/http/tls_context.h"

namespace adapterd::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using ErrorCode = boost::system::error_code;

constexpr size_t kWatchReadBytes = 4096;
// After a response that closes the connection, how long unread request
// bytes are drained so that the client sees the response rather than a reset.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

std::chrono::steady_clock::duration ToChrono(absl::Duration d) { return absl::ToChronoNanoseconds(d); }

// What an exchange asks of its connection; each call is posted onto the
// connection's strand and names the exchange it is for, so that a late
// call for an earlier request on the same connection is ignored.
class ExchangeOwner {
 public:
  virtual ~ExchangeOwner() = default;
  virtual void Post(absl::AnyInvocable<void()> fn) = 0;
  virtual void DoRespond(uint64_t seq, HttpResponse response) = 0;
  virtual void DoStream(uint64_t seq, HttpResponse head, std::shared_ptr<BodyStream> body) = 0;
  virtual void DoPull(uint64_t seq) = 0;
  virtual void DoAbort(uint64_t seq) = 0;
};

// HttpExchange for one request. Holds its connection weakly: a handler that
// keeps the exchange does not keep the connection open. Thread-safe.
class Exchange final : public HttpExchange {
 public:
  Exchange(HttpRequest request, std::weak_ptr<ExchangeOwner> owner, uint64_t seq)
      : request_(std::move(request)), owner_(std::move(owner)), seq_(seq) {}

  const HttpRequest& request() const override { return request_; }
  void Respond(HttpResponse response) override {
    if (answered_.exchange(true)) return;
    Run([seq = seq_, r = std::move(response)](ExchangeOwner& o) mutable { o.DoRespond(seq, std::move(r)); });
  }
  void Stream(HttpResponse head, std::shared_ptr<BodyStream> body) override {
    if (answered_.exchange(true)) return;
    Run([seq = seq_, h = std::move(head), b = std::move(body)](ExchangeOwner& o) mutable {
      o.DoStream(seq, std::move(h), std::move(b));
    });
  }
  void Wake() override {
    if (wake_pending_.exchange(true)) return;
    Run([seq = seq_](ExchangeOwner& o) { o.DoPull(seq); });
  }
  void Post(absl::AnyInvocable<void()> fn) override {
    if (std::shared_ptr<ExchangeOwner> o = owner_.lock()) o->Post(std::move(fn));
  }
  void OnAbandoned(absl::AnyInvocable<void()> callback) override {
    {
      absl::MutexLock lock(&mu_);
      if (complete_) return;
      if (!abandoned_) {
        on_abandoned_ = std::move(callback);
        return;
      }
    }
    callback();
  }
  void Abort() override {
    Run([seq = seq_](ExchangeOwner& o) { o.DoAbort(seq); });
  }

  // The connection's side, on its strand.
  void ClearWake() { wake_pending_.store(false); }
  void Abandon() {
    absl::AnyInvocable<void()> callback;
    {
      absl::MutexLock lock(&mu_);
      if (complete_ || abandoned_) return;
      abandoned_ = true;
      callback = std::move(on_abandoned_);
    }
    if (callback) callback();
  }
  // The answer is complete: the callback will never run, so it is dropped.
  void Complete() {
    absl::AnyInvocable<void()> dropped;
    absl::MutexLock lock(&mu_);
    complete_ = true;
    dropped = std::move(on_abandoned_);
  }

 private:
  void Run(absl::AnyInvocable<void(ExchangeOwner&)> fn) {
    std::shared_ptr<ExchangeOwner> o = owner_.lock();
    if (o == nullptr) return;
    ExchangeOwner* raw = o.get();
    raw->Post([o = std::move(o), fn = std::move(fn)]() mutable { fn(*o); });
  }

  const HttpRequest request_;
  const std::weak_ptr<ExchangeOwner> owner_;
  const uint64_t seq_;
  std::atomic<bool> answered_{false};
  std::atomic<bool> wake_pending_{false};
  absl::Mutex mu_;
  absl::AnyInvocable<void()> on_abandoned_ ABSL_GUARDED_BY(mu_);
  bool abandoned_ ABSL_GUARDED_BY(mu_) = false;
  bool complete_ ABSL_GUARDED_BY(mu_) = false;
};

// One connection over `Stream` (a TCP socket, or TLS over one). HTTP/1.1
// with keep-alive; one request at a time. While a request is answered, one
// read stays posted to notice a client that goes away (which abandons the
// exchange); bytes it brings are kept as the start of the next request.
// Every member is owned by the connection's strand: all handlers and posts
// run there, one at a time, so nothing here takes a lock.
template <class Stream>
class ConnectionImpl final : public Connection,
                             public ExchangeOwner,
                             public std::enable_shared_from_this<ConnectionImpl<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, tcp::socket>;

  ConnectionImpl(tcp::socket socket, ConnectionContext* ctx)
      : stream_(MakeStream(std::move(socket), ctx)),
        ctx_(ctx),
        read_timer_(stream_.get_executor()),
        write_timer_(stream_.get_executor()) {
    absl::MutexLock lock(&ctx_->mu);
    ++ctx_->connections;
    if (ctx_->connections_gauge != nullptr) ctx_->connections_gauge->Increment();
  }
  ~ConnectionImpl() override {
    absl::MutexLock lock(&ctx_->mu);
    --ctx_->connections;
    if (ctx_->connections_gauge != nullptr) ctx_->connections_gauge->Decrement();
  }

  void Begin() {
    Post([self = this->shared_from_this()] {
      if constexpr (kTls) {
        self->ArmRead(self->ctx_->idle_timeout);
        self->stream_.async_handshake(net::ssl::stream_base::server, [self](const ErrorCode& ec) {
          if (ec || self->state_ == State::kClosed) return self->CloseNow(nullptr);
          self->DisarmRead();
          self->client_names_ = VerifiedClientNames(self->stream_.native_handle());
          self->ReadRequest();
        });
      } else {
        self->ReadRequest();
      }
    });
  }

  void Close(bool only_if_idle) override {
    Post([self = this->shared_from_this(), only_if_idle] {
      const bool idle = self->state_ == State::kIdle ||
                        (self->state_ == State::kReadingHeader && self->buffer_.size() == 0);
      if (!only_if_idle || idle) self->CloseNow("shutdown");
    });
  }

  void Post(absl::AnyInvocable<void()> fn) override { net::post(stream_.get_executor(), std::move(fn)); }

  void DoRespond(uint64_t seq, HttpResponse r) override {
    if (!Current(seq)) return;
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>();
    SetHead(*res, r);
    res->keep_alive(keep_alive_ && !ctx_->draining.load());
    res->body() = std::move(r.body);
    res->prepare_payload();
    writing_ = final_write_ = true;
    ArmWrite();
    bhttp::async_write(stream_, *res, [self = this->shared_from_this(), res](const ErrorCode& ec, size_t) {
      self->writing_ = false;
      if (ec || self->state_ == State::kClosed) return self->WriteFailed();
      self->AnswerComplete(res->keep_alive());
    });
  }

  void DoStream(uint64_t seq, HttpResponse head, std::shared_ptr<BodyStream> body) override {
    if (!Current(seq)) return;
    body_ = std::move(body);
    chunked_ = version_ == 11;
    auto res = std::make_shared<bhttp::response<bhttp::empty_body>>();
    SetHead(*res, head);
    // HTTP/1.0 has no chunks: the body ends when the connection closes.
    res->keep_alive(chunked_ && keep_alive_ && !ctx_->draining.load());
    if (chunked_) res->chunked(true);
    stream_keep_alive_ = res->keep_alive();
    auto sr = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*res);
    writing_ = true;
    ArmWrite();
    bhttp::async_write_header(stream_, *sr, [self = this->shared_from_this(), res, sr](const ErrorCode& ec, size_t) {
      self->writing_ = false;
      // A close may have been handled between the write's end and this.
      if (ec || self->state_ == State::kClosed) return self->WriteFailed();
      self->PullAndWrite();
    });
  }

  void DoPull(uint64_t seq) override {
    if (exchange_ == nullptr || seq != seq_) return;
    exchange_->ClearWake();
    if (body_ == nullptr || writing_ || stream_done_ || state_ != State::kHandling) return;
    PullAndWrite();
  }

  void DoAbort(uint64_t seq) override {
    if (exchange_ == nullptr || seq != seq_ || state_ != State::kHandling) return;
    CloseNow(nullptr);  // the handler counts its own reason
  }

 private:
  enum class State { kReadingHeader, kReadingBody, kHandling, kIdle, kClosing, kClosed };

  static Stream MakeStream(tcp::socket socket, ConnectionContext* ctx) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *ctx->tls);
    } else {
      return std::move(socket);
    }
  }

  template <class Message>
  void SetHead(Message& m, const HttpResponse& r) {
    m.version(version_);
    m.result(static_cast<unsigned>(r.status));
    m.set(bhttp::field::server, "adapterd");
    m.set(bhttp::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) m.set(name, value);
  }

  bool Current(uint64_t seq) const { return exchange_ != nullptr && seq == seq_ && state_ == State::kHandling; }

  // Timers close the connection when they fire; a generation number keeps a
  // firing that raced a re-arm from counting.
  void ArmRead(absl::Duration d) {
    read_timer_.expires_after(ToChrono(d));
    read_timer_.async_wait([self = this->shared_from_this(), gen = ++read_gen_](const ErrorCode& ec) {
      if (!ec && gen == self->read_gen_) self->CloseNow(nullptr);
    });
  }
  void DisarmRead() {
    ++read_gen_;
    read_timer_.cancel();
  }
  void ArmWrite() {
    write_timer_.expires_after(ToChrono(ctx_->write_timeout));
    write_timer_.async_wait([self = this->shared_from_this(), gen = ++write_gen_](const ErrorCode& ec) {
      if (!ec && gen == self->write_gen_) self->CloseNow("slow_client");
    });
  }
  void DisarmWrite() {
    ++write_gen_;
    write_timer_.cancel();
  }

  void ReadRequest() {
    state_ = State::kReadingHeader;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(ctx_->max_header_bytes));
    parser_->body_limit(static_cast<std::uint64_t>(ctx_->max_body_bytes));
    ArmRead(ctx_->idle_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = this->shared_from_this()](const ErrorCode& ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(const ErrorCode& ec) {
    if (state_ == State::kClosed) return;
    if (ec) return ReadFailed(ec);
    if (parser_->is_done()) return OnRequest();
    state_ = State::kReadingBody;
    const auto expect = parser_->get()[bhttp::field::expect];
    if (parser_->get().version() == 11 && absl::EqualsIgnoreCase(absl::string_view(expect.data(), expect.size()),
                                                                  "100-continue")) {
      net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                       [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
                         if (ec || self->state_ == State::kClosed) return self->CloseNow(nullptr);
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    bhttp::async_read(stream_, buffer_, *parser_, [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
      if (self->state_ == State::kClosed) return;
      if (ec) return self->ReadFailed(ec);
      self->OnRequest();
    });
  }

  // A request that could not be read: answered here when it is the client's
  // fault (413, 431, 400), else the connection just closes.
  void ReadFailed(const ErrorCode& ec) {
    DisarmRead();
    if (ec == bhttp::error::body_limit) {
      return FailRequest(413, absl::StrCat("the request body is larger than the limit (--http_max_body_bytes) of ",
                                           ctx_->max_body_bytes, " bytes"));
    }
    if (ec == bhttp::error::header_limit) {
      return FailRequest(431, absl::StrCat("the request header is larger than ", ctx_->max_header_bytes, " bytes"));
    }
    if (ec.category() == ErrorCode(bhttp::error::bad_method).category() && ec != bhttp::error::end_of_stream &&
        ec != bhttp::error::partial_message) {
      return FailRequest(400, absl::StrCat("malformed HTTP request: ", ec.message()));
    }
    CloseNow(nullptr);
  }

  void FailRequest(int status, const std::string& message) {
    if (ctx_->metrics != nullptr) ctx_->metrics->RecordRequest("invalid", status);
    version_ = 11;
    keep_alive_ = false;
    state_ = State::kHandling;
    seq_++;
    exchange_ = std::make_shared<Exchange>(HttpRequest{}, this->weak_from_this(), seq_);
    {
      absl::MutexLock lock(&ctx_->mu);
      ++ctx_->exchanges;
    }
    DoRespond(seq_, ErrorResponse(status, message));
  }

  void OnRequest() {
    DisarmRead();
    bhttp::request<bhttp::string_body> msg = parser_->release();
    parser_.reset();
    HttpRequest r;
    r.method = std::string(msg.method_string());
    r.target = std::string(msg.target());
    r.path = r.target.substr(0, r.target.find('?'));
    for (const auto& f : msg) {
      std::string name(f.name_string().data(), f.name_string().size());
      absl::AsciiStrToLower(&name);
      r.headers.emplace_back(std::move(name), std::string(f.value()));
    }
    r.body = std::move(msg.body());
    r.client_names = client_names_;
    version_ = msg.version();
    keep_alive_ = msg.keep_alive();
    state_ = State::kHandling;
    ++seq_;
    auto exchange = std::make_shared<Exchange>(std::move(r), this->weak_from_this(), seq_);
    exchange_ = exchange;
    {
      absl::MutexLock lock(&ctx_->mu);
      ++ctx_->exchanges;
    }
    Watch();
    ctx_->handler->Handle(std::move(exchange));
  }

  // Keeps one read posted while answering or idle: end of stream or an
  // error means the client has gone; bytes are the next request's start.
  void Watch() {
    if (watching_ || buffer_.size() > 0) return;
    watching_ = true;
    stream_.async_read_some(buffer_.prepare(kWatchReadBytes),
                            [self = this->shared_from_this()](const ErrorCode& ec, size_t n) { self->OnWatch(ec, n); });
  }

  void OnWatch(const ErrorCode& ec, size_t n) {
    watching_ = false;
    if (state_ == State::kClosed) return;
    if (ec) {
      // A client that closes as soon as it has read the last byte may be
      // heard before the last write's completion: that answer is complete.
      if (state_ == State::kHandling && writing_ && final_write_) {
        peer_closed_ = true;
        return;
      }
      return CloseNow(state_ == State::kHandling ? "client_closed" : nullptr);
    }
    buffer_.commit(n);
    if (state_ == State::kClosing) {
      buffer_.consume(buffer_.size());
      return Watch();
    }
    if (state_ == State::kIdle) {
      DisarmRead();
      ReadRequest();
    }
  }

  void PullAndWrite() {
    if (body_ == nullptr || state_ != State::kHandling) return;
    out_.clear();
    const PullResult r = body_->Pull(&out_);
    if (r == PullResult::kAbort) return CloseNow(nullptr);
    stream_done_ = r == PullResult::kDone;
    if (out_.empty() && !stream_done_) return;
    frame_.clear();
    if (chunked_ && !out_.empty()) frame_ = absl::StrFormat("%x\r\n", out_.size());
    tail_ = chunked_ ? (out_.empty() ? "" : "\r\n") : "";
    if (chunked_ && stream_done_) tail_ += "0\r\n\r\n";
    std::array<net::const_buffer, 3> buffers = {net::buffer(frame_), net::buffer(out_), net::buffer(tail_)};
    writing_ = true;
    final_write_ = stream_done_;
    ArmWrite();
    net::async_write(stream_, buffers, [self = this->shared_from_this()](const ErrorCode& ec, size_t) {
      self->writing_ = false;
      if (ec || self->state_ == State::kClosed) return self->WriteFailed();
      if (self->stream_done_) return self->AnswerComplete(self->stream_keep_alive_);
      self->PullAndWrite();
    });
  }

  void WriteFailed() {
    if (state_ == State::kClosed) return;
    CloseNow("client_closed");
  }

  // The whole answer has been written.
  void AnswerComplete(bool keep_alive) {
    DisarmWrite();
    if (state_ == State::kClosed) return;
    EndExchange();
    body_.reset();
    stream_done_ = final_write_ = false;
    if (peer_closed_) return CloseNow(nullptr);
    if (!keep_alive) return Linger();
    state_ = State::kIdle;
    if (buffer_.size() > 0) return ReadRequest();
    ArmRead(ctx_->idle_timeout);
    Watch();
  }

  void EndExchange() {
    if (exchange_ == nullptr) return;
    exchange_->Complete();
    exchange_.reset();
    absl::MutexLock lock(&ctx_->mu);
    --ctx_->exchanges;
  }

  // Half-closes and drains what the client still sends for a short while,
  // so that it reads the response instead of a reset.
  void Linger() {
    state_ = State::kClosing;
    ErrorCode ignored;
    beast::get_lowest_layer(stream_).shutdown(tcp::socket::shutdown_send, ignored);
    buffer_.consume(buffer_.size());
    read_timer_.expires_after(kLingerTime);
    read_timer_.async_wait([self = this->shared_from_this(), gen = ++read_gen_](const ErrorCode& ec) {
      if (!ec && gen == self->read_gen_) self->CloseNow(nullptr);
    });
    Watch();
  }

  // Closes the socket; an exchange in progress is abandoned, counted under
  // `reason` when one is given.
  void CloseNow(const char* reason) {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    if (exchange_ != nullptr) {
      if (reason != nullptr) ctx_->RecordAbort(reason);
      exchange_->Abandon();
      exchange_.reset();
      absl::MutexLock lock(&ctx_->mu);
      --ctx_->exchanges;
    }
    body_.reset();
    DisarmRead();
    DisarmWrite();
    ErrorCode ignored;
    beast::get_lowest_layer(stream_).close(ignored);
  }

  Stream stream_;
  ConnectionContext* const ctx_;
  net::steady_timer read_timer_;
  net::steady_timer write_timer_;
  uint64_t read_gen_ = 0;
  uint64_t write_gen_ = 0;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  State state_ = State::kReadingHeader;
  std::vector<std::string> client_names_;
  bool watching_ = false;
  bool writing_ = false;
  bool final_write_ = false;  // the write in flight completes the answer
  bool peer_closed_ = false;  // the client closed while that write was in flight
  // The exchange being answered.
  uint64_t seq_ = 0;
  std::shared_ptr<Exchange> exchange_;
  unsigned version_ = 11;
  bool keep_alive_ = false;
  // A streamed answer.
  std::shared_ptr<BodyStream> body_;
  bool chunked_ = false;
  bool stream_keep_alive_ = false;
  bool stream_done_ = false;
  std::string out_, frame_, tail_;
};

}  // namespace

std::shared_ptr<Connection> StartConnection(tcp::socket socket, ConnectionContext* context) {
  if (context->tls != nullptr) {
    auto c = std::make_shared<ConnectionImpl<net::ssl::stream<tcp::socket>>>(std::move(socket), context);
    c->Begin();
    return c;
  }
  auto c = std::make_shared<ConnectionImpl<tcp::socket>>(std::move(socket), context);
  c->Begin();
  return c;
}

}  // namespace adapterd::http
