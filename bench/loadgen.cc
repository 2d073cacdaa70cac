// adapterd_loadgen: drives adapterd over gRPC, or over its OpenAI-compatible
// HTTP API with --http, and reports throughput and latency as one JSON object
// on stdout.
//
// --http=HOST:PORT sends the same workload as streamed /v1/completions
// (prompt as token ids, greedy, EOS ignored, token ids returned so that
// tokens are counted exactly): one keep-alive connection per client, SSE
// events read as they arrive.
//
// Closed loop (--rate=0): --concurrency clients each send requests back to
// back. Open loop (--rate=R): requests arrive as a Poisson process at R/s,
// each on its own thread, bounded by --requests. Prompt and output lengths
// are uniform in the given ranges; adapters are drawn uniformly or with
// power-law skew from --adapters (empty = base model only).
//
// --classify sends the prompts as Classify RPCs (gRPC only) to the
// sequence-classification adapters in --adapters; each is one answer, so
// its latency is reported as "ttft" and the rate as "requests_per_s".
//
// --inject_prompt_len=N sends one extra request with an N-token prompt
// --inject_at_s seconds into the run; it is reported separately ("injected")
// and kept out of the main figures, which then show what that prompt's
// prefill does to everyone else. --dump_workload prints the drawn requests as
// JSON lines and sends nothing, so other systems can replay the same work.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <atomic>
#include <cmath>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "adapterd/v1/inference.grpc.pb.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051", "Server address");
ABSL_FLAG(std::string, http, "", "Use the HTTP API at this address instead of gRPC");
ABSL_FLAG(int, concurrency, 1, "Closed loop: concurrent clients");
ABSL_FLAG(double, rate, 0, "Open loop: Poisson arrivals per second (0 = closed loop)");
ABSL_FLAG(int, requests, 8, "Requests in total");
ABSL_FLAG(int, warmup, 1, "Requests sent first and not measured");
ABSL_FLAG(int, prompt_min, 16, "Shortest prompt");
ABSL_FLAG(int, prompt_max, 16, "Longest prompt");
ABSL_FLAG(int, output_min, 128, "Fewest new tokens");
ABSL_FLAG(int, output_max, 128, "Most new tokens");
ABSL_FLAG(int, vocab, 2048, "Prompt ids are drawn below this");
ABSL_FLAG(std::string, adapters, "", "Comma-separated adapter ids to draw from (empty = base)");
ABSL_FLAG(bool, round_robin, false, "Request i uses adapter i mod n (instead of a random draw)");
ABSL_FLAG(double, alpha, 1.0, "Adapter popularity: id = floor(n * U^(1/alpha)); 1 = uniform");
ABSL_FLAG(uint64_t, seed, 1, "Workload seed");
ABSL_FLAG(int, system_prompt_len, 0,
          "Start every prompt with its adapter's own system prompt of this many tokens (the same for every "
          "request of one adapter; 0 = none)");
ABSL_FLAG(int, inject_prompt_len, 0, "Also send one request with a prompt this long (0 = none)");
ABSL_FLAG(double, inject_at_s, 2.0, "Seconds into the run at which the injected request starts");
ABSL_FLAG(bool, classify, false, "Send Classify RPCs (the prompts only; gRPC) instead of generation");
ABSL_FLAG(bool, dump_workload, false, "Print the requests as JSON lines and exit");

namespace {

struct Result {
  bool ok = false;
  std::string error;
  int tokens = 0;
  double ttft = 0;       // seconds
  double duration = 0;   // seconds, arrival to last token
  std::vector<double> gaps;  // seconds between consecutive tokens
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * (v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(idx)), hi = static_cast<size_t>(std::ceil(idx));
  return v[lo] + (v[hi] - v[lo]) * (idx - lo);
}

Result RunOne(adapterd::v1::Inference::Stub& stub, const adapterd::v1::GenerateRequest& req) {
  Result r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(30));
  // A router in front of several replicas hashes on it.
  if (!req.adapter_id().empty()) ctx.AddMetadata("x-adapter-id", req.adapter_id());
  const absl::Time start = absl::Now();
  absl::Time last = start;
  auto reader = stub.GenerateStream(&ctx, req);
  adapterd::v1::GenerateStreamResponse msg;
  while (reader->Read(&msg)) {
    const absl::Time now = absl::Now();
    for (int i = 0; i < msg.token_ids_size(); ++i) {
      if (r.tokens == 0) {
        r.ttft = absl::ToDoubleSeconds(now - start);
      } else {
        r.gaps.push_back(absl::ToDoubleSeconds(now - last) / msg.token_ids_size());
      }
      ++r.tokens;
    }
    if (msg.token_ids_size() > 0) last = now;
  }
  grpc::Status st = reader->Finish();
  r.duration = absl::ToDoubleSeconds(last - start);
  r.ok = st.ok();
  if (!st.ok()) r.error = absl::StrFormat("%d %s", st.error_code(), st.error_message());
  return r;
}

// One Classify call with `req`'s adapter and prompt; its latency is `ttft`.
Result ClassifyOne(adapterd::v1::Inference::Stub& stub, const adapterd::v1::GenerateRequest& req) {
  Result r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(30));
  adapterd::v1::ClassifyRequest c;
  c.set_adapter_id(req.adapter_id());
  if (!req.adapter_id().empty()) ctx.AddMetadata("x-adapter-id", req.adapter_id());
  *c.mutable_prompt_token_ids() = req.prompt_token_ids();
  adapterd::v1::ClassifyResponse resp;
  const absl::Time start = absl::Now();
  grpc::Status st = stub.Classify(&ctx, c, &resp);
  r.ttft = r.duration = absl::ToDoubleSeconds(absl::Now() - start);
  r.ok = st.ok() && resp.scores_size() > 0;
  if (!st.ok()) r.error = absl::StrFormat("%d %s", st.error_code(), st.error_message());
  return r;
}

// One keep-alive HTTP/1.1 connection that runs streamed completions.
class HttpClient {
 public:
  explicit HttpClient(std::string addr) : addr_(std::move(addr)) {}
  ~HttpClient() { Drop(); }

  Result Run(const adapterd::v1::GenerateRequest& req) {
    Result r;
    std::string body = absl::StrFormat(
        R"({"prompt": [%s], "max_tokens": %d, "temperature": 0, "ignore_eos": true, "stream": true, )"
        R"("return_token_ids": true%s})",
        absl::StrJoin(req.prompt_token_ids(), ","), req.sampling().max_new_tokens(),
        req.adapter_id().empty() ? "" : absl::StrFormat(R"(, "model": "%s")", req.adapter_id()));
    const std::string head = absl::StrFormat(
        "POST /v1/completions HTTP/1.1\r\nHost: adapterd\r\nContent-Type: application/json\r\n"
        "Content-Length: %d\r\n\r\n",
        body.size());
    const absl::Time start = absl::Now();
    absl::Time last = start;
    if (!Connect() || !Send(head + body)) {
      r.error = "cannot send";
      Drop();
      return r;
    }
    // Headers, then chunks; the body's SSE events are scanned for token ids.
    std::string events;
    bool headers_done = false, ended = false;
    while (!ended) {
      if (!headers_done) {
        const size_t end = buf_.find("\r\n\r\n");
        if (end != std::string::npos) {
          if (buf_.compare(0, 12, "HTTP/1.1 200") != 0) {
            r.error = buf_.substr(0, buf_.find("\r\n"));
            Drop();
            return r;
          }
          buf_.erase(0, end + 4);
          headers_done = true;
          continue;
        }
      } else {
        const size_t eol = buf_.find("\r\n");
        if (eol != std::string::npos) {
          const size_t size = std::stoul(buf_.substr(0, eol), nullptr, 16);
          if (buf_.size() >= eol + 2 + size + 2) {
            events.append(buf_, eol + 2, size);
            buf_.erase(0, eol + 2 + size + 2);
            ended = size == 0;
            const int n = CountTokens(events);
            if (n > 0) {
              const absl::Time now = absl::Now();
              for (int i = 0; i < n; ++i) {
                if (r.tokens == 0) {
                  r.ttft = absl::ToDoubleSeconds(now - start);
                } else {
                  r.gaps.push_back(absl::ToDoubleSeconds(now - last) / n);
                }
                ++r.tokens;
              }
              last = now;
            }
            continue;
          }
        }
      }
      if (!Receive()) {
        r.error = "connection closed";
        Drop();
        return r;
      }
    }
    r.duration = absl::ToDoubleSeconds(last - start);
    r.ok = true;
    return r;
  }

 private:
  // Counts the token ids of the complete events in `events` and drops them.
  static int CountTokens(std::string& events) {
    int n = 0;
    size_t end;
    while ((end = events.find("\n\n")) != std::string::npos) {
      const size_t ids = events.find("\"token_ids\":[");
      if (ids != std::string::npos && ids < end) {
        const size_t close = events.find(']', ids);
        const std::string list = events.substr(ids + 13, close - ids - 13);
        if (!list.empty()) n += 1 + static_cast<int>(std::count(list.begin(), list.end(), ','));
      }
      events.erase(0, end + 2);
    }
    return n;
  }
  bool Connect() {
    if (fd_ >= 0) return true;
    const size_t colon = addr_.rfind(':');
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(addr_.substr(colon + 1))));
    inet_pton(AF_INET, addr_.substr(0, colon).c_str(), &a.sin_addr);
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      Drop();
      return false;
    }
    return true;
  }
  bool Send(const std::string& bytes) {
    for (size_t off = 0; off < bytes.size();) {
      const ssize_t n = send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  bool Receive() {
    char chunk[16384];
    const ssize_t n = recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }
  void Drop() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    buf_.clear();
  }

  const std::string addr_;
  int fd_ = -1;
  std::string buf_;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto channel = grpc::CreateChannel(absl::GetFlag(FLAGS_addr), grpc::InsecureChannelCredentials());
  auto stub = adapterd::v1::Inference::NewStub(channel);
  std::vector<std::string> adapters =
      absl::StrSplit(absl::GetFlag(FLAGS_adapters), ',', absl::SkipEmpty());

  // The whole workload is drawn up front from the seed, so runs are comparable.
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  const int total = absl::GetFlag(FLAGS_requests) + absl::GetFlag(FLAGS_warmup);
  std::vector<adapterd::v1::GenerateRequest> reqs(total);
  std::vector<double> arrivals(total, 0);
  double t = 0;
  for (int i = 0; i < total; ++i) {
    auto& r = reqs[i];
    const int plen = std::uniform_int_distribution<int>(absl::GetFlag(FLAGS_prompt_min),
                                                        absl::GetFlag(FLAGS_prompt_max))(rng);
    for (int j = 0; j < plen; ++j) {
      r.add_prompt_token_ids(std::uniform_int_distribution<int>(3, absl::GetFlag(FLAGS_vocab) - 1)(rng));
    }
    r.mutable_sampling()->set_max_new_tokens(std::uniform_int_distribution<int>(
        absl::GetFlag(FLAGS_output_min), absl::GetFlag(FLAGS_output_max))(rng));
    r.mutable_sampling()->set_ignore_eos(true);
    // Drawn even without adapters, so every configuration sees the same
    // prompts, lengths and arrival times for the same seed.
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    if (!adapters.empty()) {
      size_t idx = absl::GetFlag(FLAGS_round_robin)
                       ? static_cast<size_t>(i) % adapters.size()
                       : static_cast<size_t>(adapters.size() * std::pow(u, 1.0 / absl::GetFlag(FLAGS_alpha)));
      r.set_adapter_id(adapters[std::min(idx, adapters.size() - 1)]);
    }
    if (absl::GetFlag(FLAGS_rate) > 0) {
      t += std::exponential_distribution<double>(absl::GetFlag(FLAGS_rate))(rng);
      arrivals[i] = t;
    }
  }

  // System prompts: drawn from their own generator, seeded by the adapter's
  // id, so the workload above is the same with and without them.
  if (const int n = absl::GetFlag(FLAGS_system_prompt_len); n > 0) {
    std::map<std::string, std::vector<uint32_t>> system;
    for (auto& r : reqs) {
      auto [it, fresh] = system.try_emplace(r.adapter_id());
      if (fresh) {
        std::mt19937_64 g(absl::GetFlag(FLAGS_seed) ^ std::hash<std::string>()(r.adapter_id()));
        for (int j = 0; j < n; ++j) {
          it->second.push_back(std::uniform_int_distribution<uint32_t>(3, absl::GetFlag(FLAGS_vocab) - 1)(g));
        }
      }
      std::vector<uint32_t> ids(it->second);
      ids.insert(ids.end(), r.prompt_token_ids().begin(), r.prompt_token_ids().end());
      r.clear_prompt_token_ids();
      for (uint32_t id : ids) r.add_prompt_token_ids(id);
    }
  }

  if (absl::GetFlag(FLAGS_dump_workload)) {
    for (int i = absl::GetFlag(FLAGS_warmup); i < total; ++i) {
      const auto& r = reqs[i];
      std::cout << absl::StrFormat(R"({"prompt": [%s], "max_new_tokens": %d, "adapter": "%s", "arrival_s": %.6f})",
                                   absl::StrJoin(r.prompt_token_ids(), ","),
                                   r.sampling().max_new_tokens(), r.adapter_id(), arrivals[i])
                << "\n";
    }
    return 0;
  }

  // Each client thread has its own HTTP connection; gRPC clients share the channel.
  const std::string http = absl::GetFlag(FLAGS_http);
  // A first connection attempt can fail on its own (connect() on loopback
  // has returned EINVAL once here), and every request sent while the channel
  // is in that failure fails at once. Where requests go over gRPC, up to 10 s
  // for the channel to connect; if it never does, they fail as they would
  // have.
  if (http.empty() || absl::GetFlag(FLAGS_classify)) {
    channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10));
  }
  auto run = [&](const adapterd::v1::GenerateRequest& req) {
    if (absl::GetFlag(FLAGS_classify)) return ClassifyOne(*stub, req);
    if (http.empty()) return RunOne(*stub, req);
    thread_local std::unique_ptr<HttpClient> client;
    if (client == nullptr) client = std::make_unique<HttpClient>(http);
    return client->Run(req);
  };
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) run(reqs[i]);

  // The injected long prompt runs on its own thread next to the workload.
  Result injected;
  std::thread inject_thread;
  if (const int len = absl::GetFlag(FLAGS_inject_prompt_len); len > 0) {
    adapterd::v1::GenerateRequest req;
    for (int j = 0; j < len; ++j) {
      req.add_prompt_token_ids(std::uniform_int_distribution<int>(3, absl::GetFlag(FLAGS_vocab) - 1)(rng));
    }
    req.mutable_sampling()->set_max_new_tokens(8);
    req.mutable_sampling()->set_ignore_eos(true);
    inject_thread = std::thread([&run, &injected, req] {
      absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_inject_at_s)));
      injected = run(req);
    });
  }

  std::vector<Result> results(absl::GetFlag(FLAGS_requests));
  const int first = absl::GetFlag(FLAGS_warmup);
  const absl::Time start = absl::Now();
  if (absl::GetFlag(FLAGS_rate) > 0) {
    std::vector<std::thread> threads;
    const double t0 = arrivals[first];
    for (int i = first; i < total; ++i) {
      absl::SleepFor(absl::Seconds(arrivals[i] - t0) - (absl::Now() - start));
      threads.emplace_back([&, i] { results[i - first] = run(reqs[i]); });
    }
    for (auto& th : threads) th.join();
  } else {
    std::atomic<int> next{first};
    std::vector<std::thread> threads;
    for (int c = 0; c < absl::GetFlag(FLAGS_concurrency); ++c) {
      threads.emplace_back([&] {
        for (int i = next++; i < total; i = next++) results[i - first] = run(reqs[i]);
      });
    }
    for (auto& th : threads) th.join();
  }
  const double wall = absl::ToDoubleSeconds(absl::Now() - start);
  if (inject_thread.joinable()) inject_thread.join();

  std::vector<double> ttft, tpot, per_stream;
  int64_t tokens = 0, errors = 0;
  std::string first_error;
  for (const Result& r : results) {
    if (!r.ok) {
      if (errors++ == 0) first_error = r.error;
      continue;
    }
    tokens += r.tokens;
    ttft.push_back(r.ttft);
    tpot.insert(tpot.end(), r.gaps.begin(), r.gaps.end());
    if (r.tokens > 1 && r.duration > r.ttft) per_stream.push_back((r.tokens - 1) / (r.duration - r.ttft));
  }
  const double ok_per_s = static_cast<double>(static_cast<int64_t>(results.size()) - errors) / wall;
  std::cout << absl::StrFormat(
                   R"({"requests": %d, "errors": %d, "first_error": "%s", "wall_s": %.4f, "requests_per_s": %.3f, )"
                   R"("tokens": %d, "throughput_tok_s": %.3f, "decode_tok_s_per_stream_p50": %.3f, )"
                   R"("ttft_p50_s": %.5f, "ttft_p99_s": %.5f, "tpot_p50_s": %.6f, "tpot_p99_s": %.6f, )"
                   R"("injected": {"ok": %s, "ttft_s": %.5f, "tokens": %d}})",
                   static_cast<int>(results.size()), errors, first_error, wall, ok_per_s, tokens,
                   tokens / wall, Percentile(per_stream, 50), Percentile(ttft, 50),
                   Percentile(ttft, 99), Percentile(tpot, 50), Percentile(tpot, 99),
                   injected.ok ? "true" : "false", injected.ttft, injected.tokens)
            << std::endl;
  return errors == 0 ? 0 : 1;
}
