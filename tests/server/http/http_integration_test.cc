// The HTTP API of the real adapterd binary on 127.0.0.1 (port 0), on the
// demo model (token-id prompts; the demo checkpoint has no tokenizer): SSE
// framing through curl, vLLM's LoRA endpoints, bad input, a client that
// disconnects mid-stream, a client that never reads, credentials and the
// drain on SIGTERM. Text, the openai client and load are in
// openai_client_integration_test.cc.
#include <signal.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/clients.h"
#include "tests/support/http_client.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::HttpCall;
using testing::RawConnection;
using testing::ServerProcess;

constexpr char kBase[] = "demo-llama-v1";

// A streamed greedy completion of token ids, with its token ids returned.
json StreamBody(const std::string& model, const std::vector<int>& prompt, int max_tokens) {
  return {{"model", model}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0},
          {"ignore_eos", true}, {"stream", true}, {"return_token_ids", true}};
}

double Metric(const ServerProcess& s, const std::string& name) {
  absl::StatusOr<std::string> m = testing::HttpGet(s.metrics_address(), "/metrics");
  if (!m.ok()) return -1;
  absl::StatusOr<double> v = testing::MetricSum(*m, name);
  return v.ok() ? *v : -1;
}

// Waits until nothing runs or waits and no KV block is in use, as the
// router-facing gauges report it.
bool AwaitIdle(const ServerProcess& s) {
  const bool idle = testing::PollUntil(
      [&] {
        return Metric(s, "vllm:num_requests_running") == 0 && Metric(s, "vllm:num_requests_waiting") == 0 &&
               Metric(s, "vllm:kv_cache_usage_perc") == 0;
      },
      "the server to report no running request and an empty KV cache");
  if (!idle) {
    ADD_FAILURE() << "running " << Metric(s, "vllm:num_requests_running") << ", waiting "
                  << Metric(s, "vllm:num_requests_waiting") << ", KV " << Metric(s, "vllm:kv_cache_usage_perc")
                  << ", aborted " << Metric(s, "adapterd_http_aborted_total") << ", open HTTP connections "
                  << Metric(s, "adapterd_http_connections") << "\nserver log (tail):\n"
                  << s.Log().substr(s.Log().size() > 6000 ? s.Log().size() - 6000 : 0);
  }
  return idle;
}

std::vector<uint32_t> GrpcTokens(const ServerProcess& s, const std::string& adapter, const std::vector<int>& prompt,
                                 int max_tokens) {
  auto stub = v1::Inference::NewStub(testing::Connect(s.grpc_address()));
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  grpc::Status st =
      stub->Generate(&ctx, testing::GreedyRequest(adapter, std::vector<uint32_t>(prompt.begin(), prompt.end()), max_tokens),
                     &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return {resp.token_ids().begin(), resp.token_ids().end()};
}

// The token ids of a streamed response's chunks, in order.
std::vector<uint32_t> StreamedTokens(const std::vector<std::string>& events) {
  std::vector<uint32_t> ids;
  for (const std::string& e : events) {
    if (e == "[DONE]") continue;
    json j = json::parse(e);
    for (const json& c : j["choices"]) {
      for (const json& t : c["token_ids"]) ids.push_back(t.get<uint32_t>());
    }
  }
  return ids;
}

class HttpApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto s = ServerProcess::Start({"--http_max_body_bytes=65536", "--max_waiting=256"});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = s->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static absl::StatusOr<testing::HttpReply> Post(const std::string& path, const std::string& body) {
    return HttpCall(server_->http_address(), "POST", path, body);
  }
  static std::string Curl(const std::string& args) {
    absl::StatusOr<std::string> out = testing::RunCommand(absl::StrCat("curl -sS --max-time 120 ", args));
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : "";
  }
  static std::string CurlPost(const std::string& path, const json& body) {
    return Curl(absl::StrCat("-N -H 'Content-Type: application/json' -d '", body.dump(), "' http://",
                             server_->http_address(), path));
  }
  // Where the demo adapter demo-qv-r4 was loaded from.
  static std::string DemoAdapterPath() {
    auto admin = v1::Admin::NewStub(testing::Connect(server_->grpc_address()));
    grpc::ClientContext ctx;
    v1::GetAdapterRequest req;
    req.set_adapter_id("demo-qv-r4");
    v1::AdapterInfo info;
    grpc::Status st = admin->GetAdapter(&ctx, req, &info);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return info.source();
  }

  static ServerProcess* server_;
};

ServerProcess* HttpApiTest::server_ = nullptr;

TEST_F(HttpApiTest, CurlStreamsServerSentEventsEndingWithDone) {
  const std::vector<int> prompt = {1, 17, 42, 99};
  const std::string out = CurlPost("/v1/completions", StreamBody("demo-all-r8", prompt, 12));
  std::vector<std::string> events = testing::SseData(out);
  ASSERT_GE(events.size(), 2u) << out;
  EXPECT_EQ(events.back(), "[DONE]");
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    EXPECT_TRUE(line.empty() || absl::StartsWith(line, "data: ")) << line;
  }
  json last = json::parse(events[events.size() - 2]);
  EXPECT_EQ(last["object"], "text_completion");
  EXPECT_EQ(last["model"], "demo-all-r8");
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    EXPECT_TRUE(json::parse(events[i])["choices"][0]["finish_reason"].is_null());
  }
  // The same tokens as the gRPC API, for an adapter and for the base.
  EXPECT_EQ(StreamedTokens(events), GrpcTokens(*server_, "demo-all-r8", prompt, 12));
  const std::string base = CurlPost("/v1/completions", StreamBody(kBase, prompt, 12));
  EXPECT_EQ(StreamedTokens(testing::SseData(base)), GrpcTokens(*server_, "", prompt, 12));
  EXPECT_NE(GrpcTokens(*server_, "", prompt, 12), GrpcTokens(*server_, "demo-all-r8", prompt, 12));

  // Whole responses, and the usage chunk.
  json whole = StreamBody("demo-all-r8", prompt, 12);
  whole["stream"] = false;
  whole["logprobs"] = 0;
  json r = json::parse(CurlPost("/v1/completions", whole));
  EXPECT_EQ(r["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(r["usage"]["completion_tokens"], 12);
  EXPECT_EQ(r["usage"]["total_tokens"], 16);
  EXPECT_EQ(r["choices"][0]["token_ids"].get<std::vector<uint32_t>>(), GrpcTokens(*server_, "demo-all-r8", prompt, 12));
  EXPECT_EQ(r["choices"][0]["logprobs"]["token_logprobs"].size(), 12u);
  EXPECT_TRUE(r["choices"][0]["logprobs"]["top_logprobs"].is_null());
  json usage = StreamBody(kBase, prompt, 5);
  usage["stream_options"] = {{"include_usage", true}};
  events = testing::SseData(CurlPost("/v1/completions", usage));
  ASSERT_GE(events.size(), 3u);
  json u = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["completion_tokens"], 5);
  EXPECT_TRUE(json::parse(events[0])["usage"].is_null());
}

TEST_F(HttpApiTest, SeveralPromptsAndSamplesAreChoices) {
  json body = {{"prompt", {{1, 2}, {3, 4, 5}}}, {"n", 2},           {"max_tokens", 4},
               {"temperature", 0},            {"ignore_eos", true}, {"return_token_ids", true}};
  absl::StatusOr<testing::HttpReply> r = Post("/v1/completions", body.dump());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  ASSERT_EQ(j["choices"].size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["token_ids"].get<std::vector<uint32_t>>(),
              GrpcTokens(*server_, "", i < 2 ? std::vector<int>{1, 2} : std::vector<int>{3, 4, 5}, 4))
        << "choice " << i;
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);  // each prompt once
  EXPECT_EQ(j["usage"]["completion_tokens"], 16);
  // Streamed: every choice ends with its own finish_reason, then [DONE].
  body["stream"] = true;
  std::vector<std::string> events = testing::SseData(CurlPost("/v1/completions", body));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  std::map<int, std::vector<uint32_t>> tokens;
  std::map<int, std::string> finish;
  for (const std::string& e : events) {
    if (e == "[DONE]") continue;
    const json event = json::parse(e);
    for (const json& c : event["choices"]) {
      for (const json& t : c["token_ids"]) tokens[c["index"].get<int>()].push_back(t.get<uint32_t>());
      if (!c["finish_reason"].is_null()) finish[c["index"].get<int>()] = c["finish_reason"].get<std::string>();
    }
  }
  ASSERT_EQ(tokens.size(), 4u);
  EXPECT_EQ(tokens[0], tokens[1]);
  EXPECT_EQ(tokens[2], GrpcTokens(*server_, "", {3, 4, 5}, 4));
  EXPECT_EQ(finish.size(), 4u);
}

TEST_F(HttpApiTest, ModelsListTheBaseAndEveryAdapter) {
  absl::StatusOr<testing::HttpReply> r = HttpCall(server_->http_address(), "GET", "/v1/models");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "list");
  std::map<std::string, json> cards;
  for (const json& c : j["data"]) cards[c["id"].get<std::string>()] = c;
  ASSERT_TRUE(cards.contains(kBase)) << r->body;
  ASSERT_TRUE(cards.contains("demo-qv-r4")) << r->body;
  ASSERT_TRUE(cards.contains("demo-all-r8")) << r->body;
  EXPECT_TRUE(cards[kBase]["parent"].is_null());
  EXPECT_EQ(cards["demo-qv-r4"]["parent"], kBase);
  EXPECT_EQ(cards["demo-qv-r4"]["root"], kBase);
  EXPECT_EQ(cards["demo-qv-r4"]["object"], "model");
  EXPECT_GT(cards["demo-qv-r4"]["created"].get<int64_t>(), 0);
  EXPECT_FALSE(cards["demo-qv-r4"]["owned_by"].get<std::string>().empty());
  absl::StatusOr<testing::HttpReply> one = HttpCall(server_->http_address(), "GET", "/v1/models/demo-qv-r4");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(json::parse(one->body)["id"], "demo-qv-r4");
  absl::StatusOr<testing::HttpReply> none = HttpCall(server_->http_address(), "GET", "/v1/models/nope");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->status, 404);
}

TEST_F(HttpApiTest, LoraAdaptersLoadAndUnloadAsInVllm) {
  const std::vector<int> prompt = {3, 5, 7};
  json load = {{"lora_name", "runtime-lora"}, {"lora_path", DemoAdapterPath()}};
  const std::string addr = server_->http_address();
  EXPECT_EQ(Curl(absl::StrCat("-H 'Content-Type: application/json' -d '", load.dump(), "' http://", addr,
                              "/v1/load_lora_adapter")),
            "Success: LoRA adapter 'runtime-lora' added successfully.");
  // The new model serves, with the weights it was loaded from.
  std::vector<std::string> events = testing::SseData(CurlPost("/v1/completions", StreamBody("runtime-lora", prompt, 8)));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(StreamedTokens(events), GrpcTokens(*server_, "demo-qv-r4", prompt, 8));

  absl::StatusOr<testing::HttpReply> again = Post("/v1/load_lora_adapter", load.dump());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, 400) << again->body;
  absl::StatusOr<testing::HttpReply> missing = Post("/v1/load_lora_adapter", R"({"lora_name": "x"})");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 400);
  absl::StatusOr<testing::HttpReply> nowhere =
      Post("/v1/load_lora_adapter", R"({"lora_name": "x", "lora_path": "/nonexistent/adapter"})");
  ASSERT_TRUE(nowhere.ok());
  EXPECT_EQ(nowhere->status, 404) << nowhere->body;

  EXPECT_EQ(Curl(absl::StrCat("-H 'Content-Type: application/json' -d '{\"lora_name\": \"runtime-lora\"}' http://",
                              addr, "/v1/unload_lora_adapter")),
            "Success: LoRA adapter 'runtime-lora' removed successfully.");
  const std::string after = Curl(absl::StrCat("-o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d '",
                                              StreamBody("runtime-lora", prompt, 8).dump(), "' http://", addr,
                                              "/v1/completions"));
  EXPECT_EQ(after, "404");
  absl::StatusOr<testing::HttpReply> unload_again = Post("/v1/unload_lora_adapter", R"({"lora_name": "runtime-lora"})");
  ASSERT_TRUE(unload_again.ok());
  EXPECT_EQ(unload_again->status, 404);
}

TEST_F(HttpApiTest, BadInputGetsAClearClientErrorAndTheServerKeepsServing) {
  struct Case {
    std::string path, body;
    int status;
    std::string param;  // "" for none
  };
  const std::string big(70000, 'x');
  const std::vector<Case> cases = {
      {"/v1/completions", "{not json", 400, ""},
      {"/v1/completions", "[1, 2]", 400, ""},
      {"/v1/completions", R"({"prompt": [1, 2], "max_tokens": "many"})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt": {"a": 1}})", 400, "prompt"},
      {"/v1/completions", R"({"prompt": [1, 2], "max_tokens": -3})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt": [1, 2], "n": 100000})", 400, "n"},
      {"/v1/completions", R"({"prompt": [1, 2], "temperature": -1})", 400, "temperature"},
      {"/v1/completions", R"({"prompt": [1, 999999]})", 400, ""},  // outside the vocabulary: the core says so
      {"/v1/completions", R"({"prompt": "text"})", 400, ""},        // the demo checkpoint has no tokenizer
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": 3}]})", 400, "messages[0].content"},
      {"/v1/completions", absl::StrCat(R"({"prompt": [1], "pad": ")", big, R"("})"), 413, ""},
  };
  for (const Case& c : cases) {
    absl::StatusOr<testing::HttpReply> r = Post(c.path, c.body);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, c.status) << c.body.substr(0, 120) << " -> " << r->body;
    json e = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << r->body;
    EXPECT_FALSE(e["error"]["message"].get<std::string>().empty());
    EXPECT_EQ(e["error"]["code"], c.status);
    if (!c.param.empty()) {
      EXPECT_EQ(e["error"]["param"], c.param) << r->body;
    }
  }
  absl::StatusOr<testing::HttpReply> route = HttpCall(server_->http_address(), "GET", "/v2/nothing");
  ASSERT_TRUE(route.ok());
  EXPECT_EQ(route->status, 404);
  absl::StatusOr<testing::HttpReply> method = HttpCall(server_->http_address(), "GET", "/v1/completions");
  ASSERT_TRUE(method.ok());
  EXPECT_EQ(method->status, 405);
  EXPECT_EQ(method->headers["allow"], "POST");
  // Unknown fields are ignored.
  absl::StatusOr<testing::HttpReply> ok =
      Post("/v1/completions", R"({"prompt": [1, 2], "max_tokens": 2, "frobnicate": [1, {"x": null}], "user": "u"})");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->status, 200) << ok->body;
  EXPECT_FALSE(ok->headers["x-request-id"].empty());
  // A request id the client proposes is kept.
  absl::StatusOr<testing::HttpReply> id = HttpCall(server_->http_address(), "POST", "/v1/completions",
                                                   R"({"prompt": [1, 2], "max_tokens": 2})", {{"x-request-id", "my-id-7"}});
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->headers["x-request-id"], "my-id-7");
  EXPECT_EQ(json::parse(id->body)["id"], "cmpl-my-id-7");
}

TEST_F(HttpApiTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  absl::StatusOr<RawConnection> c = RawConnection::Open(server_->http_address());
  ASSERT_TRUE(c.ok()) << c.status();
  const std::string body = StreamBody(kBase, {4, 5}, 3).dump();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c->Send(testing::PostRequest("/v1/completions", body, {}, /*keep_alive=*/true)).ok());
    absl::StatusOr<std::string> got = c->ReadUntil("data: [DONE]", absl::Seconds(60));
    ASSERT_TRUE(got.ok()) << "request " << i << ": " << got.status();
    EXPECT_THAT(*got, HasSubstr("Transfer-Encoding: chunked"));
    c->TakeRead();
  }
}

TEST_F(HttpApiTest, ClientThatDisconnectsMidStreamIsCancelled) {
  ASSERT_TRUE(AwaitIdle(*server_));
  const double generated_before = Metric(*server_, "adapterd_generated_tokens_total");
  const double aborted_before = Metric(*server_, "adapterd_http_aborted_total");
  absl::StatusOr<RawConnection> c = RawConnection::Open(server_->http_address());
  ASSERT_TRUE(c.ok()) << c.status();
  constexpr int kMaxTokens = 2000;
  ASSERT_TRUE(c->Send(testing::PostRequest("/v1/completions", StreamBody(kBase, {1, 2, 3}, kMaxTokens).dump())).ok());
  ASSERT_TRUE(c->ReadUntil("data: {", absl::Seconds(60)).ok());
  ASSERT_TRUE(testing::PollUntil([&] { return Metric(*server_, "vllm:num_requests_running") == 1; },
                                 "the stream to be running"));
  c->Close();
  ASSERT_TRUE(AwaitIdle(*server_));
  EXPECT_GE(Metric(*server_, "adapterd_http_aborted_total"), aborted_before + 1);
  // Cancelled, not finished: fewer tokens than asked for were generated.
  EXPECT_LT(Metric(*server_, "adapterd_generated_tokens_total") - generated_before, kMaxTokens);
}

// Clients that go away at every stage (mid-header, mid-body, right after
// the request, after the first event), send garbage or pipeline requests,
// while a well-behaved stream runs: it completes, and the server stays
// healthy and returns to idle.
TEST_F(HttpApiTest, ClientsThatMisbehaveDoNotDisturbOthers) {
  const std::string body = StreamBody(kBase, {7, 7, 7}, 64).dump();
  const std::string request = testing::PostRequest("/v1/completions", body);
  absl::StatusOr<RawConnection> good = RawConnection::Open(server_->http_address());
  ASSERT_TRUE(good.ok());
  ASSERT_TRUE(good->Send(request).ok());
  for (int round = 0; round < 40; ++round) {
    std::vector<RawConnection> open;
    for (int kind = 0; kind < 6; ++kind) {
      absl::StatusOr<RawConnection> c = RawConnection::Open(server_->http_address());
      ASSERT_TRUE(c.ok()) << c.status();
      switch (kind) {
        case 0: (void)c->Send(request.substr(0, 20)); break;                      // mid-header
        case 1: (void)c->Send(request.substr(0, request.size() - 5)); break;      // mid-body
        case 2: (void)c->Send(request); break;                                    // right after
        case 3:                                                                    // after an event
          (void)c->Send(request);
          (void)c->ReadUntil("data: {", absl::Seconds(60));
          break;
        case 4: (void)c->Send("\x16\x03\x01 not http at all\r\n\r\n"); break;  // garbage
        case 5: (void)c->Send(request + request); break;                          // pipelined
      }
      open.push_back(*std::move(c));
    }
  }
  absl::StatusOr<std::string> done = good->ReadUntil("data: [DONE]", absl::Seconds(120));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_THAT(*done, HasSubstr("\"finish_reason\":\"length\""));
  ASSERT_TRUE(AwaitIdle(*server_));
  absl::StatusOr<testing::HttpReply> health = HttpCall(server_->http_address(), "GET", "/health");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(health->status, 200);
}

// A client that sends a streamed request and never reads: the server must
// neither buffer its output without bound nor hold up other streams. The
// kernel holds at most --http_send_buffer_bytes (doubled) of it; the rest
// waits in one pending buffer, and past --http_max_pending_bytes (or a write
// stalled past --http_write_timeout_seconds) the request is cancelled.
TEST(HttpSlowClientTest, ClientThatNeverReadsIsCutOffWithoutStallingOthers) {
  auto s = testing::StartDemoServer(
      {"--http_max_pending_bytes=16384", "--http_write_timeout_seconds=5", "--http_send_buffer_bytes=65536"});
  ASSERT_TRUE(s.ok()) << s.status();
  ServerProcess& server = **s;
  absl::StatusOr<RawConnection> stalled = RawConnection::Open(server.http_address(), /*receive_buffer=*/2048);
  ASSERT_TRUE(stalled.ok());
  json body = StreamBody(kBase, {9, 8, 7}, 2000);
  body["logprobs"] = 0;  // larger events
  ASSERT_TRUE(stalled->Send(testing::PostRequest("/v1/completions", body.dump())).ok());
  ASSERT_TRUE(testing::PollUntil([&] { return Metric(server, "vllm:num_requests_running") >= 1; },
                                 "the unread stream to start"));
  // Other streams complete meanwhile.
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<testing::HttpReply> r =
        HttpCall(server.http_address(), "POST", "/v1/completions", StreamBody(kBase, {i + 1, 2}, 16).dump(), {},
                 absl::Seconds(60));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, 200);
    EXPECT_EQ(testing::SseData(r->body).back(), "[DONE]");
  }
  // The unread stream is cut off: counted, cancelled, its KV blocks free.
  ASSERT_TRUE(testing::PollUntil(
      [&] {
        absl::StatusOr<std::string> m = testing::HttpGet(server.metrics_address(), "/metrics");
        return m.ok() && absl::StrContains(*m, "adapterd_http_aborted_total{reason=\"slow_client\"} 1");
      },
      "the server to cut off the client that does not read"));
  ASSERT_TRUE(AwaitIdle(server));
  EXPECT_TRUE(stalled->WaitClosed(absl::Seconds(60)));
}

// A full waiting queue is 429, which the openai client retries.
TEST(HttpQueueTest, FullQueueIsTooManyRequests) {
  auto s = testing::StartDemoServer({"--max_waiting=1", "--max_batch_size=1"});
  ASSERT_TRUE(s.ok()) << s.status();
  ServerProcess& server = **s;
  absl::StatusOr<RawConnection> running = RawConnection::Open(server.http_address());
  absl::StatusOr<RawConnection> waiting = RawConnection::Open(server.http_address());
  ASSERT_TRUE(running.ok() && waiting.ok());
  const std::string body = StreamBody(kBase, {1, 2}, 1500).dump();
  ASSERT_TRUE(running->Send(testing::PostRequest("/v1/completions", body)).ok());
  ASSERT_TRUE(testing::PollUntil([&] { return Metric(server, "vllm:num_requests_running") == 1; }, "one running"));
  ASSERT_TRUE(waiting->Send(testing::PostRequest("/v1/completions", body)).ok());
  ASSERT_TRUE(testing::PollUntil([&] { return Metric(server, "vllm:num_requests_waiting") == 1; }, "one waiting"));
  absl::StatusOr<testing::HttpReply> refused = HttpCall(server.http_address(), "POST", "/v1/completions", body);
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->status, 429) << refused->body;
  EXPECT_EQ(json::parse(refused->body)["error"]["type"], "rate_limit_error");
  running->Close();
  waiting->Close();
  EXPECT_TRUE(AwaitIdle(server));
}

TEST(HttpAuthTest, BearerTokensGateInferenceAndAdmin) {
  const std::string dir = testing::MakeTempDir("http-auth");
  std::ofstream(dir + "/admin") << "admin-secret\n";
  std::ofstream(dir + "/inference") << "inference-secret\n";
  auto s = testing::StartDemoServer({"--admin_token_file=" + dir + "/admin", "--inference_token_file=" + dir + "/inference"});
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string addr = (*s)->http_address();
  const std::string body = R"({"prompt": [1, 2], "max_tokens": 2})";
  auto call = [&](const std::string& path, const std::string& token, const std::string& b) {
    testing::HttpHeaders h;
    if (!token.empty()) h.emplace_back("Authorization", "Bearer " + token);
    absl::StatusOr<testing::HttpReply> r = HttpCall(addr, "POST", path, b, h);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : testing::HttpReply{};
  };
  testing::HttpReply none = call("/v1/completions", "", body);
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.headers["www-authenticate"], "Bearer");
  EXPECT_THAT(none.body, Not(HasSubstr("inference-secret")));
  EXPECT_EQ(call("/v1/completions", "wrong", body).status, 401);
  EXPECT_EQ(call("/v1/completions", "inference-secret", body).status, 200);
  EXPECT_EQ(call("/v1/completions", "admin-secret", body).status, 200);
  const std::string unload = R"({"lora_name": "nothing-loaded"})";
  EXPECT_EQ(call("/v1/unload_lora_adapter", "", unload).status, 401);
  EXPECT_EQ(call("/v1/unload_lora_adapter", "inference-secret", unload).status, 403);
  EXPECT_EQ(call("/v1/unload_lora_adapter", "admin-secret", unload).status, 404);  // authorized; nothing to unload
  absl::StatusOr<testing::HttpReply> models = HttpCall(addr, "GET", "/v1/models");
  ASSERT_TRUE(models.ok());
  EXPECT_EQ(models->status, 401);
  absl::StatusOr<testing::HttpReply> health = HttpCall(addr, "GET", "/health");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, 200);
}

// SIGTERM: new requests on open connections get 503 and /health says 503,
// while a running stream finishes within the grace; then a clean exit.
TEST(HttpDrainTest, SigtermRefusesNewWorkAndLetsStreamsFinish) {
  auto s = testing::StartDemoServer({"--shutdown_grace_seconds=60"});
  ASSERT_TRUE(s.ok()) << s.status();
  ServerProcess& server = **s;
  absl::StatusOr<RawConnection> stream = RawConnection::Open(server.http_address());
  absl::StatusOr<RawConnection> idle = RawConnection::Open(server.http_address());
  ASSERT_TRUE(stream.ok() && idle.ok());
  ASSERT_TRUE(idle->Send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n").ok());
  ASSERT_TRUE(idle->ReadUntil("\r\n\r\n", absl::Seconds(30)).ok());
  ASSERT_TRUE(stream->Send(testing::PostRequest("/v1/completions", StreamBody(kBase, {5, 6}, 600).dump())).ok());
  ASSERT_TRUE(stream->ReadUntil("data: {", absl::Seconds(60)).ok());
  ASSERT_EQ(kill(server.pid(), SIGTERM), 0);
  ASSERT_TRUE(testing::PollUntil([&] { return absl::StrContains(server.Log(), "shutting down"); },
                                 "the server to begin its drain"));
  ASSERT_TRUE(idle->Send(testing::PostRequest("/v1/completions", R"({"prompt": [1], "max_tokens": 2})", {}, true)).ok());
  absl::StatusOr<std::string> refused = idle->ReadUntil("}}", absl::Seconds(30));
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_THAT(*refused, HasSubstr("HTTP/1.1 503"));
  absl::StatusOr<std::string> done = stream->ReadUntil("data: [DONE]", absl::Seconds(120));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_THAT(*done, HasSubstr("\"finish_reason\":\"length\""));
  EXPECT_EQ(server.Stop(0, absl::Seconds(120)), 0);
}

}  // namespace
}  // namespace adapterd
