#include "server/engine/engine.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <cmath>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "server/metrics/adapter_labels.h"
#include "server/metrics/engine_metrics.h"
#include "server/model/adapter_lease.h"
#include "server/model/demo_checkpoint.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd::engine {
namespace {

using ::testing::HasSubstr;

class Collector : public ResultSink {
 public:
  void OnTokens(std::span<const int64_t> t, std::span<const float> lp) override {
    tokens.insert(tokens.end(), t.begin(), t.end());
    if (!first_token.HasBeenNotified()) first_token.Notify();
  }
  void OnFinish(const Finish& f) override {
    finish = f;
    done.Notify();
  }
  std::vector<int64_t> tokens;
  Finish finish;
  absl::Notification done;
  absl::Notification first_token;  // owned: the engine may call OnTokens again at any time
};

std::string DemoDir() {
  static const std::string* dir = [] {
    auto d = model::EnsureDemoCheckpoint(testing::MakeTempDir("engine-demo"));
    EXPECT_TRUE(d.ok()) << d.status();
    return new std::string(d.ok() ? *d : "");
  }();
  return *dir;
}

std::unique_ptr<Engine> MakeEngine(EngineOptions opts = {}) {
  auto m = model::LlamaModel::Load(DemoDir(), {});
  EXPECT_TRUE(m.ok()) << m.status();
  auto e = Engine::Create(*std::move(m), opts, nullptr);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *std::move(e) : nullptr;
}

GenerationRequest Greedy(std::vector<int64_t> prompt, int64_t n) {
  GenerationRequest r;
  r.id = "t";
  r.prompt = std::move(prompt);
  r.sampling.max_new_tokens = n;
  r.sampling.ignore_eos = true;
  return r;
}

std::vector<int64_t> RunAlone(Engine& e, const GenerationRequest& r) {
  auto c = std::make_shared<Collector>();
  EXPECT_TRUE(e.Submit(r, c).ok());
  EXPECT_TRUE(testing::Await(c->done, "c->done"));
  EXPECT_TRUE(c->finish.status.ok()) << c->finish.status;
  return c->tokens;
}

void WaitForFreeKv(Engine& e) {
  testing::PollUntil(
      [&] {
        Engine::Stats s = e.GetStats();
        return s.running == 0 && s.waiting == 0 && s.kv_free_blocks == s.kv_total_blocks;
      },
      "every KV block to be returned");
}

TEST(EngineTest, SequencesJoiningAndLeavingMidBatchMatchRunningAlone) {
  EngineOptions opts;
  opts.max_tokens_per_step = 24;  // long prompts are chunked across steps
  auto e = MakeEngine(opts);
  ASSERT_NE(e, nullptr);
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 6; ++i) {
    std::vector<int64_t> prompt;
    for (int j = 0; j < 5 + 13 * i; ++j) prompt.push_back((i * 97 + j * 31) % 2000 + 3);
    reqs.push_back(Greedy(prompt, 8 + 5 * i));
  }
  std::vector<std::vector<int64_t>> alone;
  for (const auto& r : reqs) alone.push_back(RunAlone(*e, r));

  // Staggered: each request joins while earlier ones are mid-decode, and
  // shorter ones leave while longer ones continue.
  std::vector<std::shared_ptr<Collector>> cs;
  for (const auto& r : reqs) {
    cs.push_back(std::make_shared<Collector>());
    ASSERT_TRUE(e->Submit(r, cs.back()).ok());
    EXPECT_TRUE(testing::Await(cs.back()->first_token, "cs.back()->first_token"));
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_TRUE(testing::Await(cs[i]->done, "cs[i]->done"));
    EXPECT_EQ(cs[i]->tokens, alone[i]) << "request " << i;
    EXPECT_EQ(cs[i]->finish.reason, FinishReason::kLength);
    EXPECT_EQ(cs[i]->finish.completion_tokens, reqs[i].sampling.max_new_tokens);
  }
  WaitForFreeKv(*e);
}

TEST(EngineTest, ShortPromptIsNotHeldBackByALongOneBeingPrefilled) {
  EngineOptions opts;
  opts.max_tokens_per_step = 32;  // the long prompt takes 60 steps to prefill
  auto e = MakeEngine(opts);
  ASSERT_NE(e, nullptr);
  std::vector<int64_t> long_prompt;
  for (int i = 0; i < 1920; ++i) long_prompt.push_back(3 + (i * 7) % 1000);
  // Both sinks are called on the engine thread, so the order is exact.
  struct Timed : Collector {
    void OnTokens(std::span<const int64_t> t, std::span<const float> lp) override {
      if (tokens.empty()) first = (*clock)++;
      Collector::OnTokens(t, lp);
    }
    int* clock = nullptr;
    int first = -1;
  };
  int clock = 0;
  auto long_sink = std::make_shared<Timed>();
  auto short_sink = std::make_shared<Timed>();
  long_sink->clock = short_sink->clock = &clock;
  ASSERT_TRUE(e->Submit(Greedy(long_prompt, 4), long_sink).ok());
  ASSERT_TRUE(e->Submit(Greedy({5, 6, 7, 8}, 4), short_sink).ok());
  EXPECT_TRUE(testing::Await(long_sink->done, "long_sink->done"));
  EXPECT_TRUE(testing::Await(short_sink->done, "short_sink->done"));
  // Under first-come-first-served chunking the short prompt would wait for
  // all of the long one; with equal shares it finishes its prefill at once.
  EXPECT_EQ(short_sink->first, 0);
  EXPECT_EQ(long_sink->first, 1);
  EXPECT_EQ(long_sink->tokens, RunAlone(*e, Greedy(long_prompt, 4)));
}

TEST(EngineTest, CancelReturnsKvBlocks) {
  auto e = MakeEngine();
  ASSERT_NE(e, nullptr);
  auto c = std::make_shared<Collector>();
  auto h = e->Submit(Greedy({1, 2, 3}, 1500), c);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(testing::Await(c->first_token, "c->first_token"));
  EXPECT_LT(e->GetStats().kv_free_blocks, e->GetStats().kv_total_blocks);
  (*h)->Cancel();
  EXPECT_TRUE(testing::Await(c->done, "c->done"));
  EXPECT_EQ(c->finish.reason, FinishReason::kCancelled);
  EXPECT_EQ(c->finish.status.code(), absl::StatusCode::kCancelled);
  EXPECT_LT(c->tokens.size(), 1500u);
  WaitForFreeKv(*e);
}

TEST(EngineTest, DeadlineEndsTheRequest) {
  auto e = MakeEngine();
  ASSERT_NE(e, nullptr);
  GenerationRequest r = Greedy({1, 2, 3}, 1900);
  r.deadline = absl::Now() + absl::Milliseconds(200);
  auto c = std::make_shared<Collector>();
  ASSERT_TRUE(e->Submit(r, c).ok());
  EXPECT_TRUE(testing::Await(c->done, "c->done"));
  EXPECT_EQ(c->finish.status.code(), absl::StatusCode::kDeadlineExceeded);
  WaitForFreeKv(*e);
}

TEST(EngineTest, FullQueueIsResourceExhausted) {
  EngineOptions opts;
  opts.max_batch_size = 1;
  opts.max_waiting = 2;
  auto e = MakeEngine(opts);
  ASSERT_NE(e, nullptr);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  std::vector<std::shared_ptr<Collector>> cs;
  auto submit = [&] {
    cs.push_back(std::make_shared<Collector>());
    return e->Submit(Greedy({1, 2}, 1000), cs.back());
  };
  auto first = submit();
  ASSERT_TRUE(first.ok());
  handles.push_back(*first);
  ASSERT_TRUE(testing::PollUntil([&] { return e->GetStats().running > 0; }, "a request to start running"));
  for (int i = 0; i < 2; ++i) {
    auto h = submit();
    ASSERT_TRUE(h.ok()) << h.status();
    handles.push_back(*h);
  }
  auto rejected = submit();
  ASSERT_FALSE(rejected.ok());
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(rejected.status().message()), HasSubstr("queue is full"));
  for (auto& h : handles) h->Cancel();
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(testing::Await(cs[i]->done, "cs[i]->done"));
  WaitForFreeKv(*e);
}

TEST(EngineTest, RequestLargerThanTheKvPoolIsRejected) {
  EngineOptions opts;
  opts.kv_cache_bytes = 1 << 20;  // demo model: 64 KiB per block of 16 -> 16 blocks
  auto e = MakeEngine(opts);
  ASSERT_NE(e, nullptr);
  auto c = std::make_shared<Collector>();
  auto h = e->Submit(Greedy({1, 2, 3}, 1000), c);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(h.status().message()), HasSubstr("KV cache blocks"));
}

TEST(EngineTest, TinyKvPoolPreemptsAndStillMatchesRunningAlone) {
  EngineOptions opts;
  opts.kv_cache_bytes = 1 << 20;  // 16 blocks of 16 tokens
  auto e = MakeEngine(opts);
  ASSERT_NE(e, nullptr);
  // Each request grows to 12 blocks: all are admitted on their prompts, then
  // the newest are preempted and recomputed as the oldest grow.
  std::vector<GenerationRequest> reqs = {Greedy({5, 6, 7}, 180), Greedy({8, 9}, 180),
                                         Greedy({10}, 180), Greedy({11, 12, 13, 14}, 120)};
  std::vector<std::vector<int64_t>> alone;
  for (const auto& r : reqs) alone.push_back(RunAlone(*e, r));
  EXPECT_EQ(e->GetStats().preemptions, 0);
  std::vector<std::shared_ptr<Collector>> cs;
  for (const auto& r : reqs) {
    cs.push_back(std::make_shared<Collector>());
    ASSERT_TRUE(e->Submit(r, cs.back()).ok());
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_TRUE(testing::Await(cs[i]->done, "cs[i]->done"));
    EXPECT_TRUE(cs[i]->finish.status.ok()) << cs[i]->finish.status;
    EXPECT_EQ(cs[i]->tokens, alone[i]) << "request " << i;
    EXPECT_EQ(cs[i]->finish.prompt_tokens, static_cast<int64_t>(reqs[i].prompt.size()));
  }
  EXPECT_GT(e->GetStats().preemptions, 0);
  WaitForFreeKv(*e);
}

TEST(EngineTest, ValidationNamesTheField) {
  auto e = MakeEngine();
  ASSERT_NE(e, nullptr);
  GenerationRequest r = Greedy({1, 2, 3}, 4);
  r.sampling.top_k = -1;
  EXPECT_THAT(std::string(e->Validate(r).message()), HasSubstr("sampling.top_k"));
  r = Greedy({1, -5}, 4);
  EXPECT_THAT(std::string(e->Validate(r).message()), HasSubstr("prompt_token_ids[1]"));
  r = Greedy({1}, 4);
  r.sampling.top_p = std::nan("");
  EXPECT_THAT(std::string(e->Validate(r).message()), HasSubstr("sampling.top_p"));
  EXPECT_TRUE(e->Validate(Greedy({1}, 4)).ok());
}

TEST(EngineTest, ShutdownEndsRunningWorkAndRejectsNewWork) {
  auto e = MakeEngine();
  ASSERT_NE(e, nullptr);
  auto c = std::make_shared<Collector>();
  ASSERT_TRUE(e->Submit(Greedy({1, 2, 3}, 1800), c).ok());
  EXPECT_TRUE(testing::Await(c->first_token, "c->first_token"));
  e->Shutdown(absl::ZeroDuration());
  ASSERT_TRUE(c->done.HasBeenNotified());
  EXPECT_EQ(c->finish.status.code(), absl::StatusCode::kUnavailable);
  auto late = e->Submit(Greedy({1}, 2), std::make_shared<Collector>());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
}

TEST(EngineTest, ShutdownWithGraceLetsShortRequestsFinish) {
  auto e = MakeEngine();
  ASSERT_NE(e, nullptr);
  auto c = std::make_shared<Collector>();
  ASSERT_TRUE(e->Submit(Greedy({1, 2, 3}, 20), c).ok());
  e->Shutdown(absl::Seconds(60));
  ASSERT_TRUE(c->done.HasBeenNotified());
  EXPECT_TRUE(c->finish.status.ok()) << c->finish.status;
  EXPECT_EQ(c->tokens.size(), 20u);
}

TEST(EngineTest, StopsAtEosUnlessIgnored) {
  auto e = MakeEngine();
  ASSERT_NE(e, nullptr);
  // Find a prompt whose greedy continuation contains a token, then declare it
  // the stop token: generation ends right after it.
  GenerationRequest r = Greedy({11, 12, 13}, 10);
  std::vector<int64_t> full = RunAlone(*e, r);
  ASSERT_EQ(full.size(), 10u);
  r.sampling.stop_token_ids = {full[3]};
  auto c = std::make_shared<Collector>();
  ASSERT_TRUE(e->Submit(r, c).ok());
  EXPECT_TRUE(testing::Await(c->done, "c->done"));
  EXPECT_EQ(c->finish.reason, FinishReason::kStop);
  EXPECT_EQ(c->tokens.back(), full[3]);
  EXPECT_LE(c->tokens.size(), 4u);
}

// Collects a classification request's scores.
class ScoreCollector : public Collector {
 public:
  void OnScores(std::span<const float> s) override { scores.assign(s.begin(), s.end()); }
  std::vector<float> scores;
};

// A classifier: a three-label head and nothing else on the demo model.
std::shared_ptr<model::AdapterWeights> Classifier(const model::LlamaModel& m) {
  auto w = std::make_shared<model::AdapterWeights>(m.config().num_layers);
  w->SetClassifier(at::randn({3, m.config().hidden_size}, at::TensorOptions().dtype(at::kFloat)));
  return w;
}

TEST(EngineTest, ClassificationRowsShareStepsWithGenerationAndEndAfterPrefill) {
  auto m = model::LlamaModel::Load(DemoDir(), {});
  ASSERT_TRUE(m.ok()) << m.status();
  std::shared_ptr<model::AdapterWeights> head = Classifier(**m);
  std::unique_ptr<Engine> e = MakeEngine();
  ASSERT_NE(e, nullptr);
  // A long generation first, then a classification that joins its steps.
  auto gen = std::make_shared<Collector>();
  ASSERT_TRUE(e->Submit(Greedy({1, 2, 3}, 400), gen).ok());
  ASSERT_TRUE(testing::Await(gen->first_token, "the first generated token"));
  GenerationRequest r = Greedy({5, 6, 7, 8}, 1);
  r.kind = RequestKind::kClassify;
  r.sampling.max_new_tokens = 0;  // ignored by classification
  r.adapter = model::LeaseResident("cls", head);
  auto cls = std::make_shared<ScoreCollector>();
  ASSERT_TRUE(e->Submit(r, cls).ok());
  ASSERT_TRUE(testing::Await(cls->done, "the classification"));
  EXPECT_TRUE(cls->finish.status.ok()) << cls->finish.status;
  EXPECT_EQ(e->GetStats().peak_running, 2) << "the classification did not join the generation's steps";
  EXPECT_TRUE(cls->tokens.empty());
  EXPECT_EQ(cls->finish.completion_tokens, 0);
  ASSERT_EQ(cls->scores.size(), 3u);
  // The same as the head applied to the base model's last hidden state, alone.
  auto kv = model::KvCache::Create((*m)->config(), 16, 4 << 20, at::kFloat, at::kCPU);
  ASSERT_TRUE(kv.ok());
  std::vector<int32_t> blocks;
  ASSERT_TRUE((*kv)->Reserve(blocks, 4));
  model::ForwardBatch b;
  b.token_ids = {5, 6, 7, 8};
  b.seqs.push_back({4, 0, &blocks, true, true});
  b.adapters.push_back(head.get());
  absl::StatusOr<model::ForwardOutput> alone = (*m)->Run(b, **kv);
  ASSERT_TRUE(alone.ok()) << alone.status();
  ASSERT_EQ(alone->scores.size(), 1u);
  EXPECT_EQ(alone->logits.size(0), 0);
  // Equal up to the rounding a different GEMM shape (two rows in the step)
  // changes: 1e-4 relative, the conformance tolerance (1e-5 failed once, by
  // 1.3e-5 on a score near -1).
  for (int i = 0; i < 3; ++i) {
    const float want = alone->scores[0][i].item<float>();
    EXPECT_NEAR(cls->scores[i], want, 1e-4 * std::max(1.0f, std::abs(want)));
  }
  ASSERT_TRUE(testing::Await(gen->done, "the generation"));
  EXPECT_EQ(gen->tokens.size(), 400u);
}

TEST(EngineTest, ClassificationAndGenerationRefuseEachOthersAdapters) {
  auto m = model::LlamaModel::Load(DemoDir(), {});
  ASSERT_TRUE(m.ok()) << m.status();
  std::unique_ptr<Engine> e = MakeEngine();
  ASSERT_NE(e, nullptr);
  GenerationRequest base = Greedy({5, 6}, 1);
  base.kind = RequestKind::kClassify;
  absl::StatusOr<std::shared_ptr<RequestHandle>> h = e->Submit(base, std::make_shared<ScoreCollector>());
  EXPECT_EQ(h.status().code(), absl::StatusCode::kFailedPrecondition) << h.status();
  EXPECT_THAT(h.status().message(), HasSubstr("base model"));

  GenerationRequest no_head = base;
  no_head.adapter = model::LeaseResident("plain", std::make_shared<model::AdapterWeights>((*m)->config().num_layers));
  auto c1 = std::make_shared<ScoreCollector>();
  ASSERT_TRUE(e->Submit(no_head, c1).ok());
  ASSERT_TRUE(testing::Await(c1->done, "the refused classification"));
  EXPECT_EQ(c1->finish.status.code(), absl::StatusCode::kFailedPrecondition) << c1->finish.status;
  EXPECT_THAT(c1->finish.status.message(), HasSubstr("'plain' is a causal-LM adapter"));

  GenerationRequest gen = Greedy({5, 6}, 4);
  gen.adapter = model::LeaseResident("cls", Classifier(**m));
  auto c2 = std::make_shared<Collector>();
  ASSERT_TRUE(e->Submit(gen, c2).ok());
  ASSERT_TRUE(testing::Await(c2->done, "the refused generation"));
  EXPECT_EQ(c2->finish.status.code(), absl::StatusCode::kFailedPrecondition) << c2->finish.status;
  EXPECT_THAT(c2->finish.status.message(), HasSubstr("'cls' is a sequence-classification adapter"));
  EXPECT_TRUE(c2->tokens.empty());
  WaitForFreeKv(*e);
}

// Every step that runs a forward pass is counted, and its time split into
// parts (adapterd_step_seconds_total{part}); a base-only request spends
// time in the matrix products and attention, none in adapters.
TEST(EngineTest, StepsAreTimedByPart) {
  prometheus::Registry registry;
  metrics::AdapterLabels labels(10);
  metrics::EngineMetrics engine_metrics(registry, &labels, "demo");
  auto m = model::LlamaModel::Load(DemoDir(), {});
  ASSERT_TRUE(m.ok()) << m.status();
  auto e = Engine::Create(*std::move(m), {}, &engine_metrics);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(RunAlone(**e, Greedy({1, 2, 3, 4}, 6)).size(), 6u);
  std::map<std::string, double> parts;
  double steps = -1;
  auto collect = [&] {
    for (const prometheus::MetricFamily& f : registry.Collect()) {
      for (const prometheus::ClientMetric& c : f.metric) {
        if (f.name == "adapterd_step_seconds_total") parts[c.label.at(0).value] = c.counter.value;
        if (f.name == "adapterd_steps_total") steps = c.counter.value;
      }
    }
    return steps >= 6;
  };
  // The last step is counted once it has handed its tokens out.
  EXPECT_TRUE(testing::PollUntil(collect, "six steps counted"));
  EXPECT_EQ(steps, 6) << "one prefill step and five decode steps";
  EXPECT_EQ(parts.size(), 5u);
  EXPECT_GT(parts["gemm"], 0);
  EXPECT_GT(parts["attention"], 0);
  EXPECT_GT(parts["sampling"], 0);
  EXPECT_GE(parts["other"], 0);
  EXPECT_EQ(parts["adapters"], 0) << "no adapter ran";
}

}  // namespace
}  // namespace adapterd::engine
