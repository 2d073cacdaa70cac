// EngineOptions::load_join_wait: a step may wait, once per request and for a
// bounded time, for the adapter of a request that has just arrived, so that
// the request joins that step instead of the next one. The leases here are
// fakes whose weights arrive just after the engine first checks them, or
// when the test says so; either way the engine hears of it through the
// lease's callback, never by polling.
#include <atomic>
#include <cmath>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/engine.h"
#include "server/model/demo_checkpoint.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/fakes/fake_lease.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd::engine {
namespace {

using ::testing::HasSubstr;
using adapterd::testing::FakeLease;
using adapterd::testing::Await;
using Arrival = adapterd::testing::FakeLease::Arrival;

// Counts tokens where other threads can read the count.
class Counter : public ResultSink {
 public:
  void OnTokens(std::span<const int64_t> t, std::span<const float>) override {
    tokens.fetch_add(static_cast<int64_t>(t.size()));
    progress.Add(static_cast<int64_t>(t.size()));
    if (!first_token.HasBeenNotified()) first_token.Notify();
  }
  void OnFinish(const Finish& f) override {
    finish = f;
    done.Notify();
  }
  std::atomic<int64_t> tokens{0};
  testing::Progress progress;
  Finish finish;
  absl::Notification done;
  absl::Notification first_token;
};

class LoadJoinTest : public ::testing::Test {
 protected:
  void Start(double load_join_wait, int64_t max_tokens_per_step = 512) {
    auto dir = model::EnsureDemoCheckpoint(testing::MakeTempDir("load-join-demo"));
    ASSERT_TRUE(dir.ok()) << dir.status();
    auto m = model::LlamaModel::Load(*dir, {});
    ASSERT_TRUE(m.ok()) << m.status();
    EngineOptions opts;
    opts.max_batch_size = 4;
    opts.load_join_wait = load_join_wait;
    opts.max_tokens_per_step = max_tokens_per_step;
    auto e = Engine::Create(*std::move(m), opts, nullptr);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = *std::move(e);
    auto files = adapters::AdapterFilesFromUpload(testing::QvLora(3).Files());
    ASSERT_TRUE(files.ok()) << files.status();
    auto loaded = adapters::LoadAdapter(*files, *engine_->model());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    weights_ = loaded->weights;
  }

  static GenerationRequest Greedy(int64_t n, std::shared_ptr<model::AdapterLease> lease = nullptr) {
    GenerationRequest r;
    r.id = lease ? "b" : "a";
    r.prompt = {5, 17, 42, 7};
    r.sampling.max_new_tokens = n;
    r.sampling.ignore_eos = true;
    r.adapter = std::move(lease);
    return r;
  }

  std::shared_ptr<model::AdapterWeights> weights_;  // outlives the engine
  std::unique_ptr<Engine> engine_;
};

TEST_F(LoadJoinTest, ANewRequestWhoseAdapterArrivesDuringTheWaitJoinsTheNextStep) {
  Start(1.0, /*max_tokens_per_step=*/128);
  auto a = std::make_shared<Counter>();
  ASSERT_TRUE(engine_->Submit(Greedy(2000), a).ok());
  ASSERT_TRUE(a->progress.AwaitAtLeast(4, "request a's first 4 tokens"));
  // A long prompt in prefill beside a's decode row makes every step take
  // milliseconds: a decode row alone on this tiny model steps in well under
  // one, less than the arriving load's thread may need to be scheduled.
  GenerationRequest c;
  c.id = "c";
  for (int64_t i = 0; i < 1800; ++i) c.prompt.push_back(1 + (i * 7) % 500);
  c.sampling.max_new_tokens = 1;
  auto c_sink = std::make_shared<Counter>();
  ASSERT_TRUE(engine_->Submit(std::move(c), c_sink).ok());
  // A few such steps, so the engine knows how long one takes.
  const int64_t a_before_c = a->tokens.load();
  ASSERT_TRUE(a->progress.AwaitAtLeast(a_before_c + 3, "request a's tokens beside c's prefill"));

  auto lease = std::make_shared<FakeLease>(weights_.get(), Arrival::kOnFirstCheck);
  auto b = std::make_shared<Counter>();
  ASSERT_TRUE(engine_->Submit(Greedy(3, lease), b).ok());
  const int64_t a_at_submit = a->tokens.load();
  ASSERT_TRUE(Await(b->first_token, "request b's first token"));
  const int64_t a_at_first = a->tokens.load();
  ASSERT_TRUE(Await(b->done, "request b to finish"));
  EXPECT_TRUE(b->finish.status.ok()) << b->finish.status;

  const Engine::Stats s = engine_->GetStats();
  EXPECT_EQ(s.load_join_waits, 1);
  EXPECT_EQ(s.load_joins, 1);
  // Admitted in the first step after it arrived: the running request got at
  // most the step under way when b was submitted, and the one b joined.
  // Without the wait, b would join the step after that.
  EXPECT_LE(a_at_first - a_at_submit, 2);
  EXPECT_FALSE(c_sink->done.HasBeenNotified()) << "c's prefill ended before b joined: the steps were not long";
  engine_->Shutdown(absl::ZeroDuration());
}

TEST_F(LoadJoinTest, AnAdapterThatDoesNotArriveDelaysOneStepOnlyAndTheOthersFinish) {
  Start(1.0);
  auto lease = std::make_shared<FakeLease>(weights_.get(), Arrival::kWhenTold);
  auto a = std::make_shared<Counter>();
  auto b = std::make_shared<Counter>();
  ASSERT_TRUE(engine_->Submit(Greedy(200), a).ok());
  ASSERT_TRUE(a->progress.AwaitAtLeast(2, "request a's first 2 tokens"));
  ASSERT_TRUE(engine_->Submit(Greedy(3, lease), b).ok());
  ASSERT_TRUE(Await(a->done, "request a to finish"));
  EXPECT_TRUE(a->finish.status.ok()) << a->finish.status;
  EXPECT_EQ(a->tokens.load(), 200);
  EXPECT_FALSE(b->first_token.HasBeenNotified());
  Engine::Stats s = engine_->GetStats();
  EXPECT_EQ(s.load_join_waits, 1);  // once for b, not at every step
  EXPECT_EQ(s.load_joins, 0);

  lease->Arrive();
  ASSERT_TRUE(Await(b->done, "request b to finish once its adapter arrived"));
  EXPECT_TRUE(b->finish.status.ok()) << b->finish.status;
  EXPECT_EQ(b->tokens.load(), 3);
  engine_->Shutdown(absl::ZeroDuration());
}

TEST_F(LoadJoinTest, ZeroNeverWaits) {
  Start(0);
  auto a = std::make_shared<Counter>();
  ASSERT_TRUE(engine_->Submit(Greedy(100), a).ok());
  ASSERT_TRUE(a->progress.AwaitAtLeast(2, "request a's first 2 tokens"));
  auto b = std::make_shared<Counter>();
  ASSERT_TRUE(engine_->Submit(Greedy(3, std::make_shared<FakeLease>(weights_.get(), Arrival::kOnFirstCheck)), b).ok());
  ASSERT_TRUE(Await(b->done, "request b to finish"));
  EXPECT_TRUE(b->finish.status.ok()) << b->finish.status;
  ASSERT_TRUE(Await(a->done, "request a to finish"));
  const Engine::Stats s = engine_->GetStats();
  EXPECT_EQ(s.load_join_waits, 0);
  EXPECT_EQ(s.load_joins, 0);
  engine_->Shutdown(absl::ZeroDuration());
}

TEST(LoadJoinOptionsTest, OutOfRangeIsInvalidArgumentNamingTheOption) {
  auto dir = model::EnsureDemoCheckpoint(testing::MakeTempDir("load-join-options"));
  ASSERT_TRUE(dir.ok()) << dir.status();
  for (double bad : {-0.1, 1.5, std::nan("")}) {
    auto m = model::LlamaModel::Load(*dir, {});
    ASSERT_TRUE(m.ok()) << m.status();
    EngineOptions opts;
    opts.load_join_wait = bad;
    auto e = Engine::Create(*std::move(m), opts, nullptr);
    ASSERT_FALSE(e.ok()) << bad;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(e.status().message(), HasSubstr("load_join_wait"));
  }
}

}  // namespace
}  // namespace adapterd::engine
