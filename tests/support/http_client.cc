#include "tests/support/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace adapterd::testing {
namespace {

absl::StatusOr<int> ConnectTo(const std::string& host_port, int receive_buffer) {
  std::vector<std::string> parts = absl::StrSplit(host_port, ':');
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad address ", host_port));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  if (receive_buffer > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, parts[0].c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", host_port, ": ", strerror(e)));
  }
  return fd;
}

absl::Status SendAll(int fd, const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
    off += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Reads into `out` until the peer closes or `deadline`; false on timeout.
bool ReadToEnd(int fd, std::string& out, absl::Time deadline) {
  char buf[16384];
  while (true) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1000))) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return true;
    out.append(buf, static_cast<size_t>(n));
  }
}

absl::StatusOr<std::string> Dechunk(absl::string_view body) {
  std::string out;
  while (true) {
    const size_t eol = body.find("\r\n");
    if (eol == absl::string_view::npos) return absl::DataLossError("truncated chunk header");
    size_t size = 0;
    if (!absl::SimpleHexAtoi(body.substr(0, eol), &size)) return absl::DataLossError("bad chunk size");
    body.remove_prefix(eol + 2);
    if (size == 0) return out;
    if (body.size() < size + 2) return absl::DataLossError("truncated chunk");
    out.append(body.data(), size);
    body.remove_prefix(size + 2);
  }
}

}  // namespace

absl::StatusOr<HttpReply> ParseResponse(const std::string& raw) {
  const size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return absl::DataLossError(absl::StrCat("no complete header in: ", raw.substr(0, 200)));
  std::vector<std::string> lines = absl::StrSplit(raw.substr(0, end), "\r\n");
  HttpReply reply;
  std::vector<std::string> status = absl::StrSplit(lines[0], ' ');
  if (status.size() < 2 || !absl::SimpleAtoi(status[1], &reply.status)) {
    return absl::DataLossError(absl::StrCat("bad status line: ", lines[0]));
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    reply.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  std::string body = raw.substr(end + 4);
  if (reply.headers["transfer-encoding"] == "chunked") {
    absl::StatusOr<std::string> d = Dechunk(body);
    if (!d.ok()) return d.status();
    body = *std::move(d);
  }
  reply.body = std::move(body);
  return reply;
}

std::string PostRequest(const std::string& path, const std::string& body, const HttpHeaders& headers,
                        bool keep_alive) {
  std::string req = absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n",
                                 "Content-Length: ", body.size(), "\r\n");
  if (!keep_alive) req += "Connection: close\r\n";
  for (const auto& [k, v] : headers) absl::StrAppend(&req, k, ": ", v, "\r\n");
  return absl::StrCat(req, "\r\n", body);
}

absl::StatusOr<HttpReply> HttpCall(const std::string& host_port, const std::string& method, const std::string& path,
                                   const std::string& body, const HttpHeaders& headers, absl::Duration timeout) {
  absl::StatusOr<int> fd = ConnectTo(host_port, 0);
  if (!fd.ok()) return fd.status();
  std::string req = absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
  if (!body.empty() || method == "POST") {
    absl::StrAppend(&req, "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n");
  }
  for (const auto& [k, v] : headers) absl::StrAppend(&req, k, ": ", v, "\r\n");
  absl::StrAppend(&req, "\r\n", body);
  absl::Status sent = SendAll(*fd, req);
  std::string raw;
  const bool ended = ReadToEnd(*fd, raw, absl::Now() + timeout);
  close(*fd);
  if (!ended) return absl::DeadlineExceededError(absl::StrCat(method, " ", path, ": no complete response in time"));
  if (!sent.ok() && raw.empty()) return sent;
  return ParseResponse(raw);
}

std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (absl::ConsumePrefix(&line, "data:")) {
      absl::ConsumePrefix(&line, " ");
      out.emplace_back(line);
    }
  }
  return out;
}

absl::StatusOr<RawConnection> RawConnection::Open(const std::string& host_port, int receive_buffer) {
  absl::StatusOr<int> fd = ConnectTo(host_port, receive_buffer);
  if (!fd.ok()) return fd.status();
  return RawConnection(*fd);
}

RawConnection& RawConnection::operator=(RawConnection&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = other.fd_;
    other.fd_ = -1;
    read_ = std::move(other.read_);
  }
  return *this;
}

RawConnection::~RawConnection() { Close(); }

void RawConnection::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

absl::Status RawConnection::Send(const std::string& bytes) { return SendAll(fd_, bytes); }

absl::StatusOr<std::string> RawConnection::ReadUntil(const std::string& until, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  char buf[4096];
  while (!absl::StrContains(read_, until)) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return absl::DeadlineExceededError(absl::StrCat("'", until, "' did not arrive; got: ", read_));
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(ms)) <= 0) continue;
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) break;
    read_.append(buf, static_cast<size_t>(n));
  }
  return read_;
}

bool RawConnection::WaitClosed(absl::Duration timeout) {
  std::string discard;
  return ReadToEnd(fd_, discard, absl::Now() + timeout);
}

absl::StatusOr<ConcurrentResult> RunConcurrentStreams(const std::string& host_port, const std::string& path,
                                                      const std::vector<std::string>& bodies, absl::Duration timeout,
                                                      const std::function<void()>& while_running,
                                                      const HttpHeaders& headers) {
  ConcurrentResult result;
  result.responses.resize(bodies.size());
  std::vector<pollfd> fds;
  std::vector<size_t> index;  // fds[k] serves bodies[index[k]]
  for (size_t i = 0; i < bodies.size(); ++i) {
    absl::StatusOr<int> fd = ConnectTo(host_port, 0);
    if (!fd.ok()) {
      for (const pollfd& p : fds) close(p.fd);
      return fd.status();
    }
    if (absl::Status st = SendAll(*fd, PostRequest(path, bodies[i], headers)); !st.ok()) return st;
    fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_NONBLOCK);
    fds.push_back({*fd, POLLIN, 0});
    index.push_back(i);
  }
  const absl::Time deadline = absl::Now() + timeout;
  absl::Time next_sample = absl::Now();
  char buf[16384];
  while (!fds.empty() && absl::Now() < deadline) {
    if (while_running && absl::Now() >= next_sample) {
      while_running();
      next_sample = absl::Now() + absl::Milliseconds(50);
    }
    if (poll(fds.data(), fds.size(), 50) <= 0) continue;
    for (size_t k = 0; k < fds.size();) {
      bool closed = false;
      if (fds[k].revents != 0) {
        while (true) {
          const ssize_t n = recv(fds[k].fd, buf, sizeof buf, 0);
          if (n > 0) {
            result.responses[index[k]].append(buf, static_cast<size_t>(n));
            continue;
          }
          closed = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
          break;
        }
      }
      if (closed) {
        close(fds[k].fd);
        if (absl::StrContains(result.responses[index[k]], "data: [DONE]")) ++result.completed;
        fds[k] = fds.back();
        index[k] = index.back();
        fds.pop_back();
        index.pop_back();
      } else {
        fds[k].revents = 0;
        ++k;
      }
    }
  }
  for (const pollfd& p : fds) close(p.fd);
  return result;
}

}  // namespace adapterd::testing
