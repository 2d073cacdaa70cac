// Residency tiers under byte budgets, through the registry that owns the
// cache: LRU eviction device -> host -> disk, leases that keep adapters in
// use resident, pins, one load per burst, on-demand loads from host and from
// disk, unloads that free every tier, offloading to disk, and the errors for
// what cannot fit.
#include "adapters/adapter_cache.h"

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_loader.h"
#include "adapters/adapter_registry.h"
#include "adapters/adapter_store.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/metrics/adapter_metrics.h"
#include "tests/support/wait.h"
#include "server/model/llama_model.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/demo_model.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"

namespace adapterd::adapters {
namespace {

namespace fs = std::filesystem;
using testing::DemoLora;
using testing::IsError;
using testing::MaxDiff;

constexpr int64_t kQvBytes = 57344;  // q,v r=4 over the demo model's 4 layers, float32
const absl::Duration kTimeout = absl::Seconds(60);

// Waits for the lease to settle, as the engine does (through its callback).
absl::StatusOr<const model::AdapterWeights*> Settle(model::AdapterLease& lease) {
  auto settled = std::make_shared<absl::Notification>();
  lease.NotifyWhenSettled([settled] { settled->Notify(); });
  if (!testing::Await(*settled, "the lease of '" + lease.adapter_id() + "' to settle", kTimeout)) {
    return absl::DeadlineExceededError("the lease kept waiting");
  }
  return lease.weights();
}

// The weights once resident; null (and a test failure) on an error or timeout.
const model::AdapterWeights* Await(model::AdapterLease& lease) {
  absl::StatusOr<const model::AdapterWeights*> w = Settle(lease);
  if (!w.ok()) ADD_FAILURE() << w.status();
  return w.ok() ? *w : nullptr;
}

// The error that ends the lease's wait, or DEADLINE_EXCEEDED when the
// adapter became resident or the wait timed out.
absl::Status AwaitFailure(model::AdapterLease& lease) {
  absl::StatusOr<const model::AdapterWeights*> w = Settle(lease);
  if (!w.ok()) return w.status();
  return absl::DeadlineExceededError("the adapter became resident");
}

class AdapterCacheTest : public testing::DemoModelTest {
 protected:

  // A registry over a fresh store, with these budgets.
  void Start(int64_t device_bytes, int64_t host_bytes, bool with_store = true) {
    ASSERT_NE(base_, nullptr);
    registry_.reset();
    if (with_store) {
      absl::StatusOr<std::unique_ptr<AdapterStore>> s = AdapterStore::Open(testing::MakeTempDir("cache-store"));
      ASSERT_TRUE(s.ok()) << s.status();
      store_ = *std::move(s);
    } else {
      store_.reset();
    }
    prom_ = std::make_unique<prometheus::Registry>();
    labels_ = std::make_unique<metrics::AdapterLabels>();
    metrics_ = std::make_unique<metrics::AdapterMetrics>(*prom_, labels_.get());
    registry_ = std::make_unique<AdapterRegistry>(base_, store_.get(),
                                                  AdapterCacheOptions{device_bytes, host_bytes}, metrics_.get());
  }
  void TearDown() override {
    registry_.reset();
    store_.reset();
  }

  absl::StatusOr<AdapterInfo> Load(const std::string& id, AdapterSource source, bool pin = false,
                                   bool replace = false) {
    auto done = std::make_shared<absl::Notification>();
    auto result = std::make_shared<absl::StatusOr<AdapterInfo>>(absl::UnknownError("not called"));
    absl::Status st = registry_->StartLoad(
        id, std::move(source), replace,
        [done, result](absl::StatusOr<AdapterInfo> r) {
          *result = std::move(r);
          done->Notify();
        },
        /*persist=*/true, pin);
    if (!st.ok()) return st;
    if (!done->WaitForNotificationWithTimeout(kTimeout)) return absl::DeadlineExceededError("load timed out");
    return *result;
  }
  // A q,v r=4 LoRA (kQvBytes on the device tier) as an upload.
  absl::StatusOr<AdapterInfo> Upload(const std::string& id, uint32_t seed, bool pin = false) {
    return Load(id, UploadSource{testing::QvLora(seed).Files()}, pin);
  }
  Tier TierOf(const std::string& id) {
    absl::StatusOr<AdapterInfo> info = registry_->Get(id);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->tier : Tier::kDisk;
  }
  std::shared_ptr<model::AdapterLease> LeaseOf(const std::string& id) {
    absl::StatusOr<std::shared_ptr<const Adapter>> a = registry_->Lookup(id);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? (*a)->Lease() : nullptr;
  }
  AdapterCache::Stats Stats() const { return registry_->cache().GetStats(); }
  std::string Scrape() const { return prometheus::TextSerializer().Serialize(prom_->Collect()); }

  std::unique_ptr<AdapterStore> store_;
  std::unique_ptr<prometheus::Registry> prom_;
  std::unique_ptr<metrics::AdapterLabels> labels_;
  std::unique_ptr<metrics::AdapterMetrics> metrics_;
  std::unique_ptr<AdapterRegistry> registry_;
};


TEST_F(AdapterCacheTest, DeviceBudgetEvictsTheLeastRecentlyUsedIdleAdapter) {
  Start(/*device_bytes=*/2 * kQvBytes, /*host_bytes=*/0);
  ASSERT_TRUE(Upload("a", 1).ok());
  ASSERT_TRUE(Upload("b", 2).ok());
  { auto touch = LeaseOf("a"); ASSERT_NE(Await(*touch), nullptr); }  // b is now the least recent
  ASSERT_TRUE(Upload("c", 3).ok());
  EXPECT_EQ(TierOf("a"), Tier::kDevice);
  EXPECT_EQ(TierOf("b"), Tier::kHost);  // evicted from the device, files kept
  EXPECT_EQ(TierOf("c"), Tier::kDevice);
  AdapterCache::Stats s = Stats();
  EXPECT_EQ(s.device_adapters, 2);
  EXPECT_EQ(s.device_bytes, 2 * kQvBytes);
  EXPECT_EQ(s.evictions_device, 1);

  // b comes back from the host copy on demand, and a (now least recent) goes.
  auto lease = LeaseOf("b");
  EXPECT_EQ(Stats().misses, 1);
  ASSERT_NE(Await(*lease), nullptr);
  EXPECT_EQ(TierOf("b"), Tier::kDevice);
  EXPECT_EQ(TierOf("a"), Tier::kHost);
  s = Stats();
  EXPECT_EQ(s.loads_from_host, 1);
  EXPECT_EQ(s.loads_from_disk, 0);
  EXPECT_LE(s.device_bytes, 2 * kQvBytes);
  const std::string text = Scrape();
  EXPECT_NE(text.find("adapterd_adapter_resident{adapter=\"b\",tier=\"device\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("adapterd_adapter_resident{adapter=\"a\",tier=\"host\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("adapterd_adapter_tier_bytes{tier=\"device\"} " + std::to_string(2 * kQvBytes)),
            std::string::npos) << text;
  EXPECT_NE(text.find("adapterd_adapter_evictions_total{from_tier=\"device\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("adapterd_adapter_cache_misses_total{source_tier=\"host\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("adapterd_adapter_tier_load_seconds_count{source_tier=\"host\"} 1"), std::string::npos)
      << text;
}

TEST_F(AdapterCacheTest, AnAdapterInUseIsNeverEvicted) {
  Start(/*device_bytes=*/kQvBytes, /*host_bytes=*/0);  // room for one
  ASSERT_TRUE(Upload("busy", 1).ok());
  ASSERT_TRUE(Upload("cold", 2).ok());  // busy is idle, so cold's registration evicts it
  auto busy = LeaseOf("busy");  // brings busy back, evicting cold
  const model::AdapterWeights* w = Await(*busy);
  ASSERT_NE(w, nullptr);
  const at::Tensor before = testing::PromptLogits(*base_, w);
  // While busy's lease lives, cold must wait: there is no idle adapter to
  // evict. Once the loader has looked at cold and put it off, nothing else
  // can change that until busy's lease ends.
  auto cold = LeaseOf("cold");
  ASSERT_TRUE(testing::PollUntil([&] { return Stats().deferred_loads >= 1; }, "the loader to put cold's load off"));
  absl::StatusOr<const model::AdapterWeights*> cw = cold->weights();
  ASSERT_TRUE(cw.ok()) << cw.status();
  EXPECT_EQ(*cw, nullptr);
  EXPECT_EQ(TierOf("busy"), Tier::kDevice);
  EXPECT_EQ(Stats().waiting_leases, 1);
  EXPECT_LT(MaxDiff(testing::PromptLogits(*base_, w), before), 1e-6) << "weights changed under a lease";
  busy.reset();  // idle now: cold's load may evict it
  ASSERT_NE(Await(*cold), nullptr);
  EXPECT_EQ(TierOf("busy"), Tier::kHost);
  EXPECT_EQ(Stats().waiting_leases, 0);
  EXPECT_LE(Stats().device_bytes, kQvBytes);
}

TEST_F(AdapterCacheTest, PinnedAdaptersStayAndBlockOnlyWhatCannotFit) {
  Start(/*device_bytes=*/2 * kQvBytes, /*host_bytes=*/0);
  ASSERT_TRUE(Upload("pinned", 1, /*pin=*/true).ok());
  ASSERT_TRUE(Upload("x", 2).ok());
  ASSERT_TRUE(Upload("y", 3).ok());  // evicts x, never the pinned one
  EXPECT_EQ(TierOf("pinned"), Tier::kDevice);
  EXPECT_EQ(TierOf("x"), Tier::kHost);
  EXPECT_TRUE(registry_->Get("pinned")->pinned);
  // A second pin cannot fit beside the first while y is held.
  auto hold = LeaseOf("y");
  ASSERT_NE(Await(*hold), nullptr);
  EXPECT_TRUE(IsError(Upload("pin2", 4, /*pin=*/true).status(), absl::StatusCode::kResourceExhausted,
                      {"pin2", "--adapter_device_bytes"}));
  EXPECT_TRUE(IsError(registry_->Unload("pinned", /*keep_on_disk=*/true), absl::StatusCode::kFailedPrecondition,
                      {"pinned"}));
}

TEST_F(AdapterCacheTest, AnAdapterThatCanNeverFitBesideThePinnedOnesFailsInsteadOfWaiting) {
  Start(/*device_bytes=*/2 * kQvBytes, /*host_bytes=*/0);
  ASSERT_TRUE(Upload("p1", 1, /*pin=*/true).ok());
  ASSERT_TRUE(Upload("p2", 2, /*pin=*/true).ok());
  ASSERT_TRUE(Upload("x", 3).ok());  // registered, but off the device: no room
  EXPECT_EQ(TierOf("x"), Tier::kHost);
  auto lease = LeaseOf("x");
  const absl::Status w = AwaitFailure(*lease);
  EXPECT_TRUE(IsError(w, absl::StatusCode::kResourceExhausted, {"'x'", "pinned", "--adapter_device_bytes"}));
  EXPECT_EQ(Stats().waiting_leases, 0);
}

TEST_F(AdapterCacheTest, ABurstForOneColdAdapterLoadsItOnce) {
  Start(0, 0);
  // Large (every projection, rank 64), so that its load from disk outlasts
  // the burst of leases by far.
  const testing::FakeAdapter big = DemoLora(
      {.r = 64, .targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, .seed = 7});
  absl::StatusOr<AdapterInfo> info = Load("cold", UploadSource{big.Files()});
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_TRUE(registry_->Unload("cold", /*keep_on_disk=*/true).ok());
  EXPECT_EQ(TierOf("cold"), Tier::kDisk);
  EXPECT_EQ(Stats().device_bytes, 0);
  EXPECT_EQ(Stats().host_bytes, 0);
  std::vector<std::shared_ptr<model::AdapterLease>> leases;
  for (int i = 0; i < 16; ++i) leases.push_back(LeaseOf("cold"));
  std::vector<std::thread> threads;
  absl::Mutex mu;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&] {
      auto l = LeaseOf("cold");
      absl::MutexLock lock(&mu);
      leases.push_back(std::move(l));
    });
  }
  for (auto& t : threads) t.join();
  const model::AdapterWeights* first = nullptr;
  for (auto& l : leases) {
    const model::AdapterWeights* w = Await(*l);
    ASSERT_NE(w, nullptr);
    if (first == nullptr) first = w;
    EXPECT_EQ(w, first) << "one copy serves the whole burst";
  }
  AdapterCache::Stats s = Stats();
  EXPECT_EQ(s.loads_from_disk, 1);
  EXPECT_EQ(s.hits + s.misses, 32);
  EXPECT_GE(s.misses, 2) << "the burst did not overlap the load, so this proves nothing";
  EXPECT_EQ(s.device_bytes, info->bytes);
  EXPECT_EQ(TierOf("cold"), Tier::kDevice);
  // Read from disk, so the host tier kept the files too.
  EXPECT_GT(s.host_bytes, 0);
  // What came back from the store computes what the upload did.
  absl::StatusOr<AdapterFiles> files = AdapterFilesFromUpload(big.Files());
  ASSERT_TRUE(files.ok()) << files.status();
  absl::StatusOr<LoadedAdapter> direct = LoadAdapter(*files, *base_);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_LT(MaxDiff(testing::PromptLogits(*base_, first), testing::PromptLogits(*base_, direct->weights.get())),
            1e-6);
}

TEST_F(AdapterCacheTest, HostBudgetSendsIdleCopiesToDiskAndLoadsReadThemBack) {
  // Files of one q,v r=4 upload: the safetensors (tensors plus header) and the config.
  const UploadSource one{testing::QvLora(1).Files()};
  int64_t file_bytes = 0;
  for (const auto& [name, data] : one.files) file_bytes += static_cast<int64_t>(data.size());
  Start(/*device_bytes=*/kQvBytes, /*host_bytes=*/file_bytes);
  ASSERT_TRUE(Upload("h1", 1).ok());
  ASSERT_TRUE(Upload("h2", 2).ok());  // h1: off the device, and its host copy makes way for h2's
  EXPECT_EQ(TierOf("h1"), Tier::kDisk);
  EXPECT_EQ(TierOf("h2"), Tier::kDevice);
  AdapterCache::Stats s = Stats();
  EXPECT_LE(s.host_bytes, file_bytes);
  EXPECT_EQ(s.evictions_host, 1);
  EXPECT_EQ(s.disk_adapters, 2);
  auto lease = LeaseOf("h1");
  ASSERT_NE(Await(*lease), nullptr);
  s = Stats();
  EXPECT_EQ(s.loads_from_disk, 1);
  EXPECT_LE(s.host_bytes, file_bytes);
  EXPECT_LE(s.device_bytes, kQvBytes);
  EXPECT_NE(Scrape().find("adapterd_adapter_tier_load_seconds_count{source_tier=\"disk\"} 1"), std::string::npos);
}

TEST_F(AdapterCacheTest, UnloadFreesEveryTierAndReloadingHoldsOneCopy) {
  Start(0, 0);
  ASSERT_TRUE(Upload("u", 1).ok());
  const AdapterCache::Stats one = Stats();
  EXPECT_EQ(one.device_bytes, kQvBytes);
  EXPECT_GT(one.host_bytes, 0);
  {
    auto running = LeaseOf("u");
    ASSERT_NE(Await(*running), nullptr);
    ASSERT_TRUE(registry_->Unload("u").ok());
    EXPECT_EQ(Stats().device_bytes, kQvBytes) << "a running request keeps its weights";
  }
  AdapterCache::Stats s = Stats();
  EXPECT_EQ(s.device_bytes, 0);
  EXPECT_EQ(s.host_bytes, 0);
  EXPECT_EQ(s.device_adapters + s.host_adapters + s.disk_adapters, 0);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Upload("u", 1).ok());
    if (i < 2) {
      ASSERT_TRUE(registry_->Unload("u").ok());
    }
  }
  s = Stats();
  EXPECT_EQ(s.device_bytes, one.device_bytes);
  EXPECT_EQ(s.host_bytes, one.host_bytes);
  EXPECT_EQ(s.device_adapters, 1);
  EXPECT_EQ(Scrape().find("adapterd_adapter_resident{adapter=\"u\",tier=\"device\"} 2"), std::string::npos);
}

TEST_F(AdapterCacheTest, WhatCannotFitIsRefusedNamingTheBudget) {
  Start(/*device_bytes=*/kQvBytes / 2, /*host_bytes=*/0);
  EXPECT_TRUE(IsError(Upload("big", 1).status(), absl::StatusCode::kResourceExhausted,
                      {"big", "--adapter_device_bytes"}));
  EXPECT_FALSE(registry_->Get("big").ok());

  // Without a store an upload's host copy is its only copy: it cannot be
  // evicted, so a full host tier refuses the next upload.
  const UploadSource one{testing::QvLora(1).Files()};
  int64_t file_bytes = 0;
  for (const auto& [name, data] : one.files) file_bytes += static_cast<int64_t>(data.size());
  Start(/*device_bytes=*/0, /*host_bytes=*/file_bytes, /*with_store=*/false);
  ASSERT_TRUE(Upload("only", 1).ok());
  EXPECT_TRUE(IsError(Upload("more", 2).status(), absl::StatusCode::kResourceExhausted,
                      {"more", "--adapter_host_bytes", "--adapter_store"}));
  EXPECT_TRUE(IsError(registry_->Unload("only", /*keep_on_disk=*/true), absl::StatusCode::kFailedPrecondition,
                      {"only", "no copy on disk"}));
  EXPECT_EQ(TierOf("only"), Tier::kDevice);
}

TEST_F(AdapterCacheTest, ALoadThatFailsFromDiskReachesTheWaitingRequests) {
  Start(0, 0, /*with_store=*/false);
  const std::string dir = testing::QvLora(3).Write("cache-vanishing");
  ASSERT_TRUE(Load("gone", PathSource{dir}).ok());
  ASSERT_TRUE(registry_->Unload("gone", /*keep_on_disk=*/true).ok());
  fs::remove_all(dir);
  auto lease = LeaseOf("gone");
  const absl::Status w = AwaitFailure(*lease);
  EXPECT_TRUE(IsError(w, absl::StatusCode::kNotFound, {dir}));
  EXPECT_EQ(Stats().load_failures, 1);
  EXPECT_EQ(Stats().waiting_leases, 0);
}

}  // namespace
}  // namespace adapterd::adapters
