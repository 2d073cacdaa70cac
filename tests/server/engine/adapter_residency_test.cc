// The engine over thousands of adapters with tight residency budgets: a
// Zipf-skewed workload over 2,000 small LoRAs, whose adapters come and go
// between the device, host and disk tiers while requests run. Every
// request's tokens must equal those of a second engine that runs the same
// request with the adapter's weights built directly from its files, and the
// budgets must hold at every moment sampled.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_loader.h"
#include "adapters/adapter_registry.h"
#include "gtest/gtest.h"
#include "server/engine/engine.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/llama_model.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd::engine {
namespace {

using adapters::AdapterCache;
using adapters::AdapterRegistry;

class Collector : public ResultSink {
 public:
  void OnTokens(std::span<const int64_t> t, std::span<const float>) override {
    tokens.insert(tokens.end(), t.begin(), t.end());
  }
  void OnFinish(const Finish& f) override {
    finish = f;
    done.Notify();
  }
  std::vector<int64_t> tokens;
  Finish finish;
  absl::Notification done;
};

GenerationRequest Greedy(int id, int64_t n) {
  GenerationRequest r;
  r.id = absl::StrCat("r", id);
  for (int j = 0; j < 6; ++j) r.prompt.push_back((id * 37 + j * 11) % 500 + 3);
  r.sampling.max_new_tokens = n;
  r.sampling.ignore_eos = true;
  return r;
}

std::unique_ptr<Engine> MakeEngine(const std::string& dir, EngineOptions opts) {
  auto m = model::LlamaModel::Load(dir, {});
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  auto e = Engine::Create(*std::move(m), opts, nullptr);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *std::move(e) : nullptr;
}

TEST(AdapterResidencyTest, ZipfOverTwoThousandAdaptersKeepsBudgetsAndEveryAnswer) {
  constexpr int kAdapters = 2000;
  constexpr int kRequests = 400;
  constexpr int64_t kTokens = 4;
  const std::string base_dir = *model::EnsureDemoCheckpoint(testing::MakeTempDir("residency-demo"));
  EngineOptions opts;
  opts.max_batch_size = 16;
  opts.max_adapters_per_batch = 8;
  auto engine = MakeEngine(base_dir, opts);
  auto reference = MakeEngine(base_dir, opts);
  ASSERT_NE(engine, nullptr);
  ASSERT_NE(reference, nullptr);

  // 2,000 rank-2 q/v LoRAs, large enough deltas that each changes the tokens.
  const std::string root = testing::MakeTempDir("residency-adapters");
  std::vector<std::string> dirs;
  for (int i = 0; i < kAdapters; ++i) {
    testing::FakeAdapter a = testing::DemoLora(
        {.r = 2, .alpha = 16, .targets = {"q_proj", "v_proj"}, .seed = static_cast<uint32_t>(1000 + 7 * i),
         .a_amplitude = 0.3f, .b_amplitude = 0.3f});
    dirs.push_back(absl::StrCat(root, "/a", i));
    ASSERT_TRUE(a.WriteTo(dirs.back()).ok());
  }
  const int64_t adapter_bytes = [&] {
    auto files = adapters::ReadAdapterDirectory(dirs[0]);
    auto loaded = adapters::LoadAdapter(*files, *engine->model());
    return loaded->weights->bytes();
  }();
  const int64_t file_bytes = [&] {
    auto m = adapters::ReadAdapterFilesIntoMemory(dirs[0]);
    int64_t n = 0;
    for (const auto& [name, data] : *m) n += static_cast<int64_t>(data.size());
    return n;
  }();
  const adapters::AdapterCacheOptions budgets{/*device_bytes=*/24 * adapter_bytes,
                                              /*host_bytes=*/96 * file_bytes};
  AdapterRegistry registry(engine->model(), nullptr, budgets, nullptr);
  for (int i = 0; i < kAdapters; ++i) {
    absl::Notification done;
    absl::Status result;
    ASSERT_TRUE(registry
                    .StartLoad(absl::StrCat("a", i), adapters::PathSource{dirs[i]}, false,
                               [&](absl::StatusOr<adapters::AdapterInfo> r) {
                                 result = r.status();
                                 done.Notify();
                               })
                    .ok());
    EXPECT_TRUE(testing::Await(done, "done"));
    ASSERT_TRUE(result.ok()) << result;
  }
  ASSERT_EQ(registry.ready_count(), kAdapters);

  // Zipf(1.1) popularity over a fixed random order of the adapters.
  std::mt19937 rng(42);
  std::vector<int> order(kAdapters);
  for (int i = 0; i < kAdapters; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<double> weights(kAdapters);
  for (int k = 0; k < kAdapters; ++k) weights[k] = 1.0 / std::pow(k + 1, 1.1);
  std::discrete_distribution<int> zipf(weights.begin(), weights.end());
  std::vector<int> picks(kRequests);
  for (int& p : picks) p = order[zipf(rng)];

  std::vector<std::shared_ptr<Collector>> got(kRequests), want(kRequests);
  std::map<int, std::shared_ptr<model::AdapterWeights>> direct;  // for the reference engine
  constexpr int kWave = 40;
  for (int w0 = 0; w0 < kRequests; w0 += kWave) {
    for (int i = w0; i < std::min(kRequests, w0 + kWave); ++i) {
      GenerationRequest r = Greedy(i, kTokens);
      absl::StatusOr<std::shared_ptr<const adapters::Adapter>> a = registry.Lookup(absl::StrCat("a", picks[i]));
      ASSERT_TRUE(a.ok()) << a.status();
      r.adapter = (*a)->Lease();
      got[i] = std::make_shared<Collector>();
      ASSERT_TRUE(engine->Submit(std::move(r), got[i]).ok());
    }
    for (int i = w0; i < std::min(kRequests, w0 + kWave); ++i) {
      ASSERT_TRUE(got[i]->done.WaitForNotificationWithTimeout(absl::Seconds(300))) << "request " << i;
    }
  }
  const AdapterCache::Stats s = registry.cache().GetStats();
  const int64_t max_device = s.peak_device_bytes, max_host = s.peak_host_bytes;

  // The reference: the same requests with weights built straight from the files.
  for (int i = 0; i < kRequests; ++i) {
    if (!direct.contains(picks[i])) {
      auto files = adapters::ReadAdapterDirectory(dirs[picks[i]]);
      ASSERT_TRUE(files.ok()) << files.status();
      auto loaded = adapters::LoadAdapter(*files, *reference->model());
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      direct[picks[i]] = loaded->weights;
    }
    GenerationRequest r = Greedy(i, kTokens);
    r.adapter = model::LeaseResident(absl::StrCat("a", picks[i]), direct[picks[i]]);
    want[i] = std::make_shared<Collector>();
    ASSERT_TRUE(reference->Submit(std::move(r), want[i]).ok());
  }
  int distinct_answers = 0;
  std::map<std::vector<int64_t>, int> seen;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(want[i]->done.WaitForNotificationWithTimeout(absl::Seconds(300)));
    ASSERT_TRUE(got[i]->finish.status.ok()) << "request " << i << ": " << got[i]->finish.status;
    EXPECT_EQ(got[i]->tokens, want[i]->tokens) << "request " << i << " through adapter a" << picks[i];
    if (seen[want[i]->tokens]++ == 0) ++distinct_answers;
  }
  std::cout << "distinct adapters used " << direct.size() << ", loads from host " << s.loads_from_host
            << ", from disk " << s.loads_from_disk << ", device evictions " << s.evictions_device
            << ", host evictions " << s.evictions_host << ", hits " << s.hits << ", misses " << s.misses
            << ", peak device bytes " << max_device << " / " << budgets.device_bytes << ", peak host bytes "
            << max_host << " / " << budgets.host_bytes << "\n";
  EXPECT_LE(max_device, budgets.device_bytes);
  EXPECT_LE(max_host, budgets.host_bytes);
  EXPECT_LE(s.device_bytes, budgets.device_bytes);
  // The workload did exercise every path: misses served from host and from
  // disk, evictions from both tiers.
  EXPECT_GT(s.loads_from_host, 0);
  EXPECT_GT(s.loads_from_disk, 0);
  EXPECT_GT(s.evictions_device, 0);
  EXPECT_GT(s.evictions_host, 0);
  EXPECT_GT(s.hits, 0);
  EXPECT_EQ(s.waiting_leases, 0);
  // Different adapters gave different answers, so a mix-up would show.
  EXPECT_GT(distinct_answers, static_cast<int>(direct.size()) / 2);
}

TEST(AdapterResidencyTest, MaxAdaptersPerBatchBoundsTheDistinctAdaptersRunning) {
  const std::string base_dir = *model::EnsureDemoCheckpoint(testing::MakeTempDir("per-batch-demo"));
  EngineOptions opts;
  opts.max_batch_size = 16;
  opts.max_adapters_per_batch = 2;
  auto engine = MakeEngine(base_dir, opts);
  EngineOptions unbounded = opts;
  unbounded.max_adapters_per_batch = 0;
  auto reference = MakeEngine(base_dir, unbounded);
  ASSERT_NE(engine, nullptr);
  ASSERT_NE(reference, nullptr);
  std::vector<std::shared_ptr<model::AdapterWeights>> weights;
  for (int i = 0; i < 6; ++i) {
    testing::FakeAdapter a = testing::DemoLora({.r = 4, .seed = static_cast<uint32_t>(50 + 9 * i),
                                                .a_amplitude = 0.3f, .b_amplitude = 0.3f});
    auto files = adapters::AdapterFilesFromUpload(a.Files());
    ASSERT_TRUE(files.ok()) << files.status();
    auto loaded = adapters::LoadAdapter(*files, *engine->model());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    weights.push_back(loaded->weights);
  }
  std::vector<std::shared_ptr<Collector>> got, want;
  for (int i = 0; i < 6; ++i) {
    for (Engine* e : {engine.get(), reference.get()}) {
      GenerationRequest r = Greedy(i, 24);
      r.adapter = model::LeaseResident(absl::StrCat("w", i), weights[i]);
      auto c = std::make_shared<Collector>();
      (e == engine.get() ? got : want).push_back(c);
      ASSERT_TRUE(e->Submit(std::move(r), c).ok());
    }
  }
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(got[i]->done.WaitForNotificationWithTimeout(absl::Seconds(120)));
    ASSERT_TRUE(want[i]->done.WaitForNotificationWithTimeout(absl::Seconds(120)));
    EXPECT_EQ(got[i]->tokens, want[i]->tokens) << "request " << i;
  }
  // One adapter per request: never more than two requests at once, and two
  // did run together (the bound is not one).
  EXPECT_EQ(engine->GetStats().peak_running, 2);
}

}  // namespace
}  // namespace adapterd::engine
