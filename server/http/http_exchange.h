// What the HTTP listener hands its handler: one request, and the means to
// answer it whole or as a stream. Free of any HTTP library's types.
#ifndef ADAPTERD_SERVER_HTTP_HTTP_EXCHANGE_H_
#define ADAPTERD_SERVER_HTTP_HTTP_EXCHANGE_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"

namespace adapterd::http {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: path and query
  std::string path;    // the target without its query
  // Header names lower-cased, in the order received.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Names (CN and subject alternative names) of the client's TLS
  // certificate, when it presented one that verified.
  std::vector<std::string> client_names;

  // The first value of header `name` (lower-case), or "" when absent.
  std::string_view Header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

enum class PullResult {
  kWait,   // nothing more now: pull again after the next HttpExchange::Wake()
  kDone,   // the body is complete; what was appended is its last part
  kAbort,  // close the connection without completing the body
};

// The body of a streamed response, pulled by the connection whenever it can
// write: the producer only signals (HttpExchange::Wake) and never pushes,
// so output that arrives while the client reads slowly waits in the
// producer, in whatever coalesced form it chooses.
class BodyStream {
 public:
  virtual ~BodyStream() = default;
  // Appends what is ready to `out`. Called on the connection's I/O thread,
  // never while a write of this body is in flight.
  virtual PullResult Pull(std::string* out) = 0;
};

// One request on one connection, and its answer. The handler answers
// exactly once, with Respond or Stream, from any thread and at any time; a
// second answer is ignored. Every method is thread-safe and returns at once:
// the work happens on the connection's I/O thread. Once the connection has
// closed, answers are dropped.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;

  virtual const HttpRequest& request() const = 0;
  // Sends a whole response.
  virtual void Respond(HttpResponse response) = 0;
  // Sends `head` (its body is ignored) and then the body pulled from
  // `body`: chunked for HTTP/1.1 clients, until close for HTTP/1.0 ones.
  virtual void Stream(HttpResponse head, std::shared_ptr<BodyStream> body) = 0;
  // Tells the connection that the stream has more to pull. Cheap; wakes
  // that arrive while one is pending are merged.
  virtual void Wake() = 0;
  // Runs `fn` on the connection's I/O thread, unless it has closed.
  virtual void Post(absl::AnyInvocable<void()> fn) = 0;
  // Runs `callback` once if the exchange is abandoned before its answer is
  // complete: the client disconnected, a write stalled past the write
  // timeout, Abort() was called or the server closed the connection. Runs at
  // once if that has already happened. At most one callback.
  virtual void OnAbandoned(absl::AnyInvocable<void()> callback) = 0;
  // Abandons the exchange and closes its connection.
  virtual void Abort() = 0;
};

// Answers requests. Handle is called on an I/O thread for every request
// and must not block; the answer may come later, from any thread.
class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  virtual void Handle(std::shared_ptr<HttpExchange> exchange) = 0;
};

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_HTTP_EXCHANGE_H_
