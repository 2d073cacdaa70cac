// Starts the real adapterd binary on 127.0.0.1 (port 0) and talks to it with a
// real gRPC client.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/clients.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

using ::adapterd::testing::ServerProcess;
using ::testing::HasSubstr;
using v1::GenerateRequest;
using v1::GenerateResponse;
using v1::GenerateStreamResponse;

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto s = ServerProcess::Start({"--max_waiting=64"});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = s->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    channel_ = adapterd::testing::Connect(server_->grpc_address());
    stub_ = v1::Inference::NewStub(channel_);
  }

  static GenerateRequest Request(std::vector<uint32_t> prompt, uint32_t max_new) {
    GenerateRequest r;
    for (uint32_t t : prompt) r.add_prompt_token_ids(t);
    r.mutable_sampling()->set_max_new_tokens(max_new);
    r.mutable_sampling()->set_ignore_eos(true);
    return r;
  }
  static void SetDeadline(grpc::ClientContext& ctx, absl::Duration d) {
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + d));
  }
  grpc::Status Call(const GenerateRequest& r, GenerateResponse* resp) {
    grpc::ClientContext ctx;
    SetDeadline(ctx, absl::Seconds(60));
    return stub_->Generate(&ctx, r, resp);
  }
  std::string Metrics() {
    auto body = testing::HttpGet(server_->metrics_address(), "/metrics");
    EXPECT_TRUE(body.ok()) << body.status();
    return body.ok() ? *body : "";
  }
  // Waits until the server reports no running or waiting requests.
  void WaitIdle() {
    for (int i = 0; i < 200; ++i) {
      std::string m = Metrics();
      if (absl::StrContains(m, "adapterd_requests_running 0") &&
          absl::StrContains(m, "adapterd_requests_waiting 0") &&
          absl::StrContains(m, "adapterd_kv_cache_utilization 0")) {
        return;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "server did not become idle:\n" << Metrics();
  }

  static ServerProcess* server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

ServerProcess* ServerTest::server_ = nullptr;

TEST_F(ServerTest, GenerateIsDeterministicAndCarriesRequestId) {
  GenerateRequest req = Request({1, 17, 42, 99}, 12);
  req.mutable_sampling()->set_return_logprobs(true);
  GenerateResponse a, b;
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Seconds(60));
  ctx.AddMetadata("x-request-id", "test-req-1");
  grpc::Status st = stub_->Generate(&ctx, req, &a);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(Call(req, &b).ok());
  EXPECT_EQ(a.token_ids_size(), 12);
  EXPECT_EQ(std::vector<uint32_t>(a.token_ids().begin(), a.token_ids().end()),
            std::vector<uint32_t>(b.token_ids().begin(), b.token_ids().end()));
  EXPECT_EQ(a.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(a.usage().prompt_tokens(), 4u);
  EXPECT_EQ(a.usage().completion_tokens(), 12u);
  EXPECT_EQ(a.request_id(), "test-req-1");
  auto md = ctx.GetServerInitialMetadata();
  ASSERT_EQ(md.count("x-request-id"), 1u);
  EXPECT_EQ(std::string(md.find("x-request-id")->second.data(), md.find("x-request-id")->second.size()),
            "test-req-1");
  ASSERT_EQ(a.logprobs_size(), 12);
  for (float lp : a.logprobs()) {
    EXPECT_LE(lp, 0.0f);
    EXPECT_TRUE(std::isfinite(lp));
  }
  EXPECT_FALSE(b.request_id().empty());
  EXPECT_NE(b.request_id(), a.request_id());
}

TEST_F(ServerTest, StreamMatchesUnaryAndEndsWithUsage) {
  GenerateRequest req = Request({5, 6, 7}, 10);
  GenerateResponse unary;
  ASSERT_TRUE(Call(req, &unary).ok());
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Seconds(60));
  auto reader = stub_->GenerateStream(&ctx, req);
  GenerateStreamResponse msg;
  std::vector<uint32_t> tokens;
  int messages = 0;
  v1::FinishReason reason = v1::FINISH_REASON_UNSPECIFIED;
  while (reader->Read(&msg)) {
    ++messages;
    tokens.insert(tokens.end(), msg.token_ids().begin(), msg.token_ids().end());
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      reason = msg.finish_reason();
      EXPECT_EQ(msg.usage().completion_tokens(), 10u);
      EXPECT_EQ(msg.usage().prompt_tokens(), 3u);
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_GE(messages, 2);
  EXPECT_EQ(reason, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(tokens, std::vector<uint32_t>(unary.token_ids().begin(), unary.token_ids().end()));
}

TEST_F(ServerTest, StopTokenEndsGeneration) {
  GenerateRequest req = Request({3, 1, 4, 1, 5}, 16);
  GenerateResponse full;
  ASSERT_TRUE(Call(req, &full).ok());
  ASSERT_EQ(full.token_ids_size(), 16);
  const uint32_t stop = full.token_ids(4);
  int first = 0;
  while (full.token_ids(first) != stop) ++first;
  req.mutable_sampling()->add_stop_token_ids(stop);
  GenerateResponse stopped;
  ASSERT_TRUE(Call(req, &stopped).ok());
  EXPECT_EQ(stopped.finish_reason(), v1::FINISH_REASON_STOP);
  ASSERT_EQ(stopped.token_ids_size(), first + 1);
  EXPECT_EQ(stopped.token_ids(first), stop);
}

TEST_F(ServerTest, SeededSamplingIsReproducible) {
  GenerateRequest req = Request({9, 8, 7}, 12);
  req.mutable_sampling()->set_temperature(1.5f);
  req.mutable_sampling()->set_top_k(50);
  req.mutable_sampling()->set_top_p(0.9f);
  req.mutable_sampling()->set_seed(1234);
  GenerateResponse a, b;
  ASSERT_TRUE(Call(req, &a).ok());
  ASSERT_TRUE(Call(req, &b).ok());
  EXPECT_EQ(std::vector<uint32_t>(a.token_ids().begin(), a.token_ids().end()),
            std::vector<uint32_t>(b.token_ids().begin(), b.token_ids().end()));
}

TEST_F(ServerTest, ClientCancelMidStreamFreesTheSequence) {
  GenerateRequest req = Request({1, 2, 3}, 1800);
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Seconds(120));
  auto reader = stub_->GenerateStream(&ctx, req);
  GenerateStreamResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  ASSERT_TRUE(reader->Read(&msg));
  ctx.TryCancel();
  while (reader->Read(&msg)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  WaitIdle();
  EXPECT_THAT(Metrics(), HasSubstr("rpc=\"GenerateStream\"} "));
}

TEST_F(ServerTest, DeadlineExceeded) {
  GenerateRequest req = Request({1, 2, 3}, 1900);
  grpc::ClientContext ctx;
  SetDeadline(ctx, absl::Milliseconds(300));
  GenerateResponse resp;
  grpc::Status st = stub_->Generate(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  WaitIdle();
}

TEST_F(ServerTest, BadRequestsGetInvalidArgumentNamingTheField) {
  struct Case {
    std::string name;
    GenerateRequest req;
    grpc::StatusCode code;
    std::string field;
  };
  std::vector<Case> cases;
  cases.push_back({"empty prompt", Request({}, 4), grpc::StatusCode::INVALID_ARGUMENT,
                   "prompt_token_ids"});
  cases.push_back({"out of vocabulary", Request({1, 2048}, 4),
                   grpc::StatusCode::INVALID_ARGUMENT, "prompt_token_ids[1]"});
  cases.push_back({"over context", Request({1, 2, 3}, 2047),
                   grpc::StatusCode::INVALID_ARGUMENT, "max_new_tokens"});
  cases.push_back({"zero max_new_tokens", Request({1}, 0), grpc::StatusCode::INVALID_ARGUMENT,
                   "sampling.max_new_tokens"});
  GenerateRequest nan = Request({1}, 4);
  nan.mutable_sampling()->set_temperature(std::nanf(""));
  cases.push_back({"NaN temperature", nan, grpc::StatusCode::INVALID_ARGUMENT,
                   "sampling.temperature"});
  GenerateRequest neg = Request({1}, 4);
  neg.mutable_sampling()->set_temperature(-1);
  cases.push_back({"negative temperature", neg, grpc::StatusCode::INVALID_ARGUMENT,
                   "sampling.temperature"});
  GenerateRequest top_p = Request({1}, 4);
  top_p.mutable_sampling()->set_top_p(1.5f);
  cases.push_back({"top_p above 1", top_p, grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"});
  GenerateRequest stop = Request({1}, 4);
  stop.mutable_sampling()->add_stop_token_ids(5000);
  cases.push_back({"stop id outside vocab", stop, grpc::StatusCode::INVALID_ARGUMENT,
                   "sampling.stop_token_ids[0]"});
  GenerateRequest no_sampling;
  no_sampling.add_prompt_token_ids(1);
  cases.push_back({"missing sampling", no_sampling, grpc::StatusCode::INVALID_ARGUMENT,
                   "sampling"});
  GenerateRequest adapter = Request({1}, 4);
  adapter.set_adapter_id("no-such-adapter");
  cases.push_back({"unknown adapter", adapter, grpc::StatusCode::NOT_FOUND, "no-such-adapter"});

  for (const Case& c : cases) {
    GenerateResponse resp;
    grpc::Status st = Call(c.req, &resp);
    EXPECT_EQ(st.error_code(), c.code) << c.name << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(c.field)) << c.name;
    // The streaming RPC validates the same way.
    grpc::ClientContext ctx;
    SetDeadline(ctx, absl::Seconds(30));
    auto reader = stub_->GenerateStream(&ctx, c.req);
    GenerateStreamResponse msg;
    EXPECT_FALSE(reader->Read(&msg)) << c.name;
    EXPECT_EQ(reader->Finish().error_code(), c.code) << c.name;
  }
  // The server is still healthy afterwards.
  GenerateResponse ok;
  EXPECT_TRUE(Call(Request({1, 2}, 2), &ok).ok());
}

TEST_F(ServerTest, HealthAndCli) {
  const std::string ctl = testing::BinaryDir() + "/server/adapterctl --addr=" + server_->grpc_address();
  auto overall = testing::RunCommand(ctl + " health");
  ASSERT_TRUE(overall.ok()) << overall.status();
  EXPECT_THAT(*overall, HasSubstr("SERVING"));
  auto svc = testing::RunCommand(ctl + " health --service=adapterd.v1.Inference");
  ASSERT_TRUE(svc.ok()) << svc.status();
  EXPECT_THAT(*svc, HasSubstr("SERVING"));
  auto unknown = testing::RunCommand(ctl + " health --service=no.such.Service");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("error: 5"));  // NOT_FOUND

  auto gen = testing::RunCommand(ctl + " generate --prompt=1,2,3 --max_new_tokens=5 --ignore_eos");
  ASSERT_TRUE(gen.ok()) << gen.status();
  EXPECT_THAT(*gen, HasSubstr("finish=length"));
  EXPECT_THAT(*gen, HasSubstr("completion_tokens=5"));

  // The embedded default comes with its demo adapters loaded.
  auto list = testing::RunCommand(ctl + " list");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_THAT(*list, HasSubstr("demo-qv-r4  ready  lora  ranks=4  targets=q_proj,v_proj"));
  EXPECT_THAT(*list, HasSubstr("demo-all-r8  ready  lora  ranks=8"));
  auto with_adapter = testing::RunCommand(
      ctl + " generate --unary --adapter=demo-qv-r4 --prompt=1,2,3 --max_new_tokens=5 --ignore_eos");
  ASSERT_TRUE(with_adapter.ok()) << with_adapter.status();
  EXPECT_THAT(*with_adapter, HasSubstr("completion_tokens=5"));
}

TEST_F(ServerTest, MetricsAreScraped) {
  GenerateResponse resp;
  ASSERT_TRUE(Call(Request({4, 4, 4}, 3), &resp).ok());
  const std::string m = Metrics();
  EXPECT_THAT(m, HasSubstr("adapterd_requests_total{code=\"OK\",rpc=\"Generate\"}"));
  EXPECT_THAT(m, HasSubstr("adapterd_time_to_first_token_seconds_count"));
  EXPECT_THAT(m, HasSubstr("adapterd_time_per_output_token_seconds_count"));
  EXPECT_THAT(m, HasSubstr("adapterd_request_duration_seconds_count"));
  EXPECT_THAT(m, HasSubstr("adapterd_generated_tokens_total"));
  EXPECT_THAT(m, HasSubstr("adapterd_prompt_tokens_total"));
  EXPECT_THAT(m, HasSubstr("adapterd_requests_running"));
  EXPECT_THAT(m, HasSubstr("adapterd_requests_waiting"));
  EXPECT_THAT(m, HasSubstr("adapterd_kv_cache_utilization"));
  auto missing = testing::HttpGet(server_->metrics_address(), "/nothing");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("404"));
}

// A separate server: SIGTERM lets the in-flight stream finish, then exits 0.
TEST(ServerShutdownTest, SigtermFinishesInFlightWorkAndExitsZero) {
  auto s = ServerProcess::Start({"--shutdown_grace_seconds=60"});
  ASSERT_TRUE(s.ok()) << s.status();
  auto channel = adapterd::testing::Connect((*s)->grpc_address());
  auto stub = v1::Inference::NewStub(channel);
  GenerateRequest req;
  for (uint32_t t : {1u, 2u, 3u}) req.add_prompt_token_ids(t);
  req.mutable_sampling()->set_max_new_tokens(64);
  req.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  auto reader = stub->GenerateStream(&ctx, req);
  GenerateStreamResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  size_t tokens = msg.token_ids_size();
  std::thread stopper([&] { EXPECT_EQ((*s)->Stop(SIGTERM, absl::Seconds(90)), 0); });
  while (reader->Read(&msg)) tokens += msg.token_ids_size();
  grpc::Status st = reader->Finish();
  stopper.join();
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(tokens, 64u);
  EXPECT_THAT((*s)->Log(), HasSubstr("shut down cleanly"));
}

TEST(ServerStartupTest, MalformedCheckpointFailsNamingTheFile) {
  const std::string dir = testing::MakeTempDir("bad-model");
  std::ofstream(dir + "/config.json") << "{ not json";
  auto s = ServerProcess::Start({"--model=" + dir}, absl::Seconds(60));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(dir + "/config.json: not valid JSON"));
}

}  // namespace
}  // namespace adapterd
