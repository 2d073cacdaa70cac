// A small blocking HTTP/1.1 client over loopback for the HTTP API's tests,
// and many concurrent streams on one thread for its load tests.
#ifndef ADAPTERD_TESTS_SUPPORT_HTTP_CLIENT_H_
#define ADAPTERD_TESTS_SUPPORT_HTTP_CLIENT_H_

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace adapterd::testing {

struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // de-chunked
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// Sends one request on a fresh connection ("Connection: close") and reads
// the whole response, within `timeout`.
absl::StatusOr<HttpReply> HttpCall(const std::string& host_port, const std::string& method, const std::string& path,
                                   const std::string& body = "", const HttpHeaders& headers = {},
                                   absl::Duration timeout = absl::Seconds(120));

// Parses a raw response (status line, headers, body; chunks joined).
absl::StatusOr<HttpReply> ParseResponse(const std::string& raw);

// The payloads of the "data:" lines of a server-sent event stream, in order.
std::vector<std::string> SseData(const std::string& body);

// A connected socket for tests that control reading: send a request, read
// some of the answer, stop reading, or go away.
class RawConnection {
 public:
  // `receive_buffer` > 0 sets SO_RCVBUF before connecting.
  static absl::StatusOr<RawConnection> Open(const std::string& host_port, int receive_buffer = 0);
  RawConnection(RawConnection&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  RawConnection& operator=(RawConnection&& other) noexcept;
  ~RawConnection();

  absl::Status Send(const std::string& bytes);
  // Reads what arrives within `timeout` until `until` appears in what has
  // been read so far (or the peer closes); returns everything read.
  absl::StatusOr<std::string> ReadUntil(const std::string& until, absl::Duration timeout);
  // True once the peer has closed (a read returns 0 or an error), waiting
  // at most `timeout` and discarding what arrives.
  bool WaitClosed(absl::Duration timeout);
  // What has been read so far, which is then forgotten.
  std::string TakeRead() { return std::exchange(read_, std::string()); }
  void Close();
  int fd() const { return fd_; }

 private:
  explicit RawConnection(int fd) : fd_(fd) {}
  int fd_ = -1;
  std::string read_;
};

// A POST of `body` to `path` as raw bytes, with Content-Length.
std::string PostRequest(const std::string& path, const std::string& body, const HttpHeaders& headers = {},
                        bool keep_alive = false);

// Runs `bodies.size()` POSTs of streamed completions to `path` at once, one
// connection each, on the calling thread (poll), until every response has
// ended or `timeout` passes. Returns each response's raw bytes (headers and
// body, as sent with HTTP/1.0 framing: no chunks). `while_running` is
// called every ~50 ms while streams are open (e.g. to sample the server).
struct ConcurrentResult {
  std::vector<std::string> responses;
  int completed = 0;  // streams whose server closed after [DONE]
};
absl::StatusOr<ConcurrentResult> RunConcurrentStreams(const std::string& host_port, const std::string& path,
                                                      const std::vector<std::string>& bodies, absl::Duration timeout,
                                                      const std::function<void()>& while_running = nullptr,
                                                      const HttpHeaders& headers = {});

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_SUPPORT_HTTP_CLIENT_H_
