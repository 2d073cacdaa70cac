// The device tier over a model with a LoraSlotPool: a registration that
// finds every slot taken keeps tensors of its own; a load from host or disk
// evicts the least recently used idle adapter that holds a slot and takes
// it; when a running adapter holds every slot, a load goes into tensors of
// its own instead of waiting. Every version computes the same logits.
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "adapters/adapter_cache.h"
#include "adapters/adapter_registry.h"
#include "adapters/adapter_store.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "server/metrics/adapter_metrics.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/llama_model.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/demo_model.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd::adapters {
namespace {

const absl::Duration kTimeout = absl::Seconds(60);

class AdapterCacheSlotsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> dir = model::EnsureDemoCheckpoint(testing::MakeTempDir("cache-slots"));
    ASSERT_TRUE(dir.ok()) << dir.status();
    model::ModelOptions options;
    options.adapter_slots = 1;
    options.adapter_slot_rank = 8;
    absl::StatusOr<std::unique_ptr<model::LlamaModel>> base = model::LlamaModel::Load(*dir, options);
    ASSERT_TRUE(base.ok()) << base.status();
    base_ = *std::move(base);
    absl::StatusOr<std::unique_ptr<AdapterStore>> store = AdapterStore::Open(testing::MakeTempDir("cache-slots-store"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    labels_ = std::make_unique<metrics::AdapterLabels>();
    metrics_ = std::make_unique<metrics::AdapterMetrics>(prom_, labels_.get());
    registry_ = std::make_unique<AdapterRegistry>(base_.get(), store_.get(), AdapterCacheOptions{}, metrics_.get());
  }
  void TearDown() override {
    registry_.reset();
    store_.reset();
  }

  // Registers a q,v r=4 LoRA upload.
  void Upload(const std::string& id, uint32_t seed) {
    absl::Notification done;
    absl::Status result = absl::UnknownError("not called");
    ASSERT_TRUE(registry_
                    ->StartLoad(id, UploadSource{testing::QvLora(seed).Files()}, false,
                                [&](absl::StatusOr<AdapterInfo> r) {
                                  result = r.status();
                                  done.Notify();
                                })
                    .ok());
    ASSERT_TRUE(testing::Await(done, "the upload of " + id, kTimeout));
    ASSERT_TRUE(result.ok()) << result;
  }
  // A lease on `id` and its weights once resident (null on a failure).
  std::shared_ptr<model::AdapterLease> LeaseOf(const std::string& id, const model::AdapterWeights*& weights) {
    weights = nullptr;
    absl::StatusOr<std::shared_ptr<const Adapter>> a = registry_->Lookup(id);
    EXPECT_TRUE(a.ok()) << a.status();
    if (!a.ok()) return nullptr;
    std::shared_ptr<model::AdapterLease> lease = (*a)->Lease();
    auto settled = std::make_shared<absl::Notification>();
    lease->NotifyWhenSettled([settled] { settled->Notify(); });
    if (!testing::Await(*settled, id + " to become resident", kTimeout)) return lease;
    absl::StatusOr<const model::AdapterWeights*> w = lease->weights();
    EXPECT_TRUE(w.ok()) << w.status();
    if (w.ok()) weights = *w;
    return lease;
  }
  Tier TierOf(const std::string& id) {
    absl::StatusOr<AdapterInfo> info = registry_->Get(id);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->tier : Tier::kDisk;
  }

  std::unique_ptr<model::LlamaModel> base_;
  std::unique_ptr<AdapterStore> store_;
  prometheus::Registry prom_;
  std::unique_ptr<metrics::AdapterLabels> labels_;
  std::unique_ptr<metrics::AdapterMetrics> metrics_;
  std::unique_ptr<AdapterRegistry> registry_;
};

TEST_F(AdapterCacheSlotsTest, LoadsTakeTheSlotOfAnIdleAdapterAndRunBesideABusyOne) {
  Upload("a", 1);
  Upload("b", 2);
  const model::AdapterWeights* w = nullptr;
  at::Tensor a_logits, b_logits;
  {
    auto lease = LeaseOf("a", w);
    ASSERT_NE(w, nullptr);
    EXPECT_GE(w->pool_slot(), 0) << "a was registered while the slot was free";
    a_logits = testing::PromptLogits(*base_, w);
  }
  {
    auto lease = LeaseOf("b", w);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->pool_slot(), -1) << "b was built while a held the only slot";
    b_logits = testing::PromptLogits(*base_, w);
  }
  EXPECT_GT(testing::MaxDiff(a_logits, b_logits), 1e-3);
  EXPECT_EQ(TierOf("a"), Tier::kDevice);
  EXPECT_EQ(TierOf("b"), Tier::kDevice);

  // b comes back from disk: a is idle and holds the slot, so it goes.
  ASSERT_TRUE(registry_->Unload("b", /*keep_on_disk=*/true).ok());
  ASSERT_EQ(TierOf("b"), Tier::kDisk);
  auto b_lease = LeaseOf("b", w);
  ASSERT_NE(w, nullptr);
  EXPECT_GE(w->pool_slot(), 0);
  EXPECT_LT(testing::MaxDiff(testing::PromptLogits(*base_, w), b_logits), 1e-6);
  EXPECT_EQ(TierOf("a"), Tier::kHost);
  EXPECT_EQ(registry_->cache().GetStats().evictions_device, 1);

  // a comes back while b runs: no slot can be freed, so a gets its own tensors.
  auto a_lease = LeaseOf("a", w);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->pool_slot(), -1);
  EXPECT_LT(testing::MaxDiff(testing::PromptLogits(*base_, w), a_logits), 1e-6);
  EXPECT_EQ(TierOf("b"), Tier::kDevice);
  EXPECT_EQ(registry_->cache().GetStats().evictions_device, 1);
  EXPECT_EQ(base_->lora_slot_pool()->used_slots(), 1);
}

}  // namespace
}  // namespace adapterd::adapters
