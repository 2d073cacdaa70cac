// Many concurrent clients over many adapters against the real server
// (loopback, bounded): every stream completes with the tokens that its
// adapter gives when run alone, and the router-facing gauges move.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/demo_checkpoint.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/clients.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

constexpr int kAdapters = 16;
constexpr int kClients = 200;
constexpr int kTokens = 12;

v1::GenerateRequest Request(const std::string& adapter, int client) {
  v1::GenerateRequest req;
  req.set_adapter_id(adapter);
  for (int i = 0; i < 3 + client % 5; ++i) req.add_prompt_token_ids(static_cast<uint32_t>(7 + 13 * i + client % 3));
  req.mutable_sampling()->set_max_new_tokens(kTokens);
  req.mutable_sampling()->set_ignore_eos(true);
  return req;
}

std::vector<uint32_t> Stream(v1::Inference::Stub& stub, const v1::GenerateRequest& req, grpc::Status* st) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(300)));
  auto reader = stub.GenerateStream(&ctx, req);
  v1::GenerateStreamResponse msg;
  std::vector<uint32_t> tokens;
  while (reader->Read(&msg)) tokens.insert(tokens.end(), msg.token_ids().begin(), msg.token_ids().end());
  *st = reader->Finish();
  return tokens;
}

TEST(LoadTest, TwoHundredStreamingClientsOverSixteenAdapters) {
  const std::string dir = testing::MakeTempDir("load");
  ASSERT_TRUE(model::EnsureDemoCheckpoint(dir + "/cache").ok());
  auto server = testing::ServerProcess::Start({"--cache_dir=" + dir + "/cache", "--max_batch_size=64"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = adapterd::testing::Connect((*server)->grpc_address());
  auto admin = v1::Admin::NewStub(channel);
  auto stub = v1::Inference::NewStub(channel);
  std::vector<std::string> ids;
  for (int a = 0; a < kAdapters; ++a) {
    ids.push_back(absl::StrCat("tenant-", a));
    testing::LoraSpec spec;
    spec.r = 2 + 2 * (a % 4);  // mixed ranks in one batch
    spec.seed = 1000 + 97 * static_cast<uint32_t>(a);
    spec.b_amplitude = 0.5f;
    const std::string path = testing::MakeLora(testing::DemoModelConfig(), spec).Write(ids.back());
    grpc::ClientContext ctx;
    v1::LoadAdapterRequest req;
    req.set_adapter_id(ids.back());
    req.set_path(path);
    v1::AdapterInfo info;
    ASSERT_TRUE(admin->LoadAdapter(&ctx, req, &info).ok());
  }
  // Reference: each (adapter, prompt shape) alone, one at a time.
  std::map<std::pair<int, int>, std::vector<uint32_t>> alone;
  for (int c = 0; c < kClients; ++c) {
    const auto key = std::make_pair(c % kAdapters, c % 15);
    if (alone.contains(key)) continue;
    grpc::Status st;
    alone[key] = Stream(*stub, Request(ids[c % kAdapters], c), &st);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(alone[key].size(), static_cast<size_t>(kTokens));
  }
  // The adapters really differ, so a row routed to the wrong adapter shows.
  std::set<std::vector<uint32_t>> distinct;
  for (const auto& [key, tokens] : alone) distinct.insert(tokens);
  EXPECT_GT(distinct.size(), alone.size() / 2);
  std::atomic<int> wrong{0}, failed{0};
  std::atomic<bool> saw_activity{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      grpc::Status st;
      std::vector<uint32_t> got = Stream(*stub, Request(ids[c % kAdapters], c), &st);
      if (!st.ok()) {
        ++failed;
      } else if (got != alone.at({c % kAdapters, c % 15})) {
        ++wrong;
      }
    });
  }
  // While they run, the router-facing gauges name running adapters.
  for (int i = 0; i < 100 && !saw_activity; ++i) {
    auto m = testing::HttpGet((*server)->metrics_address(), "/metrics");
    saw_activity = m.ok() && absl::StrContains(*m, "running_lora_adapters=\"tenant-");
    if (!saw_activity) absl::SleepFor(absl::Milliseconds(20));
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_TRUE(saw_activity.load());
  auto m = testing::HttpGet((*server)->metrics_address(), "/metrics");
  ASSERT_TRUE(m.ok());
  EXPECT_THAT(*m, ::testing::HasSubstr("adapterd_adapter_requests_running{adapter=\"tenant-3\"} 0"));
  EXPECT_THAT(*m, ::testing::HasSubstr("adapterd_requests_running 0"));
}

TEST(LoadTest, QueueFullIsResourceExhaustedAtOnce) {
  const std::string dir = testing::MakeTempDir("queue");
  auto server = testing::ServerProcess::Start({"--cache_dir=" + dir, "--max_batch_size=1", "--max_waiting=2"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = adapterd::testing::Connect((*server)->grpc_address());
  auto stub = v1::Inference::NewStub(channel);
  // One long request runs, two wait; the fourth is refused immediately.
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>>> readers;
  for (int i = 0; i < 3; ++i) {
    v1::GenerateRequest req = Request("", i);
    req.mutable_sampling()->set_max_new_tokens(1500);
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub->GenerateStream(ctxs.back().get(), req));
    if (i == 0) {
      v1::GenerateStreamResponse msg;
      ASSERT_TRUE(readers.back()->Read(&msg));  // running
    }
  }
  for (int i = 0; i < 500; ++i) {  // until the two others are queued
    auto m = testing::HttpGet((*server)->metrics_address(), "/metrics");
    if (m.ok() && absl::StrContains(*m, "adapterd_requests_waiting 2")) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  v1::GenerateResponse resp;
  grpc::ClientContext ctx;
  // Had the server queued it, the deadline would pass: DEADLINE_EXCEEDED.
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  grpc::Status st = stub->Generate(&ctx, Request("", 9), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_THAT(st.error_message(), ::testing::HasSubstr("queue is full"));
  for (auto& c : ctxs) c->TryCancel();
  for (auto& r : readers) r->Finish();
}

}  // namespace
}  // namespace adapterd
