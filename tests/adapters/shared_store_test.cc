// An adapter store shared by several servers: each AdapterStore or registry
// instance here stands for one server (its own file descriptors, so the
// cross-process lock is exercised as between processes). Concurrent writes
// of one id leave one whole entry; a server loads what another wrote when a
// request names it; a sync applies other servers' unloads and replaces.
#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "adapters/adapter_registry.h"
#include "adapters/adapter_store.h"
#include "adapters/store_sync.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/file_util.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/demo_model.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd::adapters {
namespace {

using ::testing::AnyOf;
using ::testing::Eq;

AdapterStoreOptions Shared(absl::Duration grace = absl::Hours(1)) {
  AdapterStoreOptions o;
  o.shared = true;
  o.superseded_grace = grace;
  return o;
}

UploadSource Upload(const std::string& weights) {
  return UploadSource{{{"adapter_config.json", R"({"peft_type": "LORA"})"}, {"adapter_model.safetensors", weights}}};
}

std::unique_ptr<AdapterStore> OpenShared(const std::string& dir, absl::Duration grace = absl::Hours(1)) {
  absl::StatusOr<std::unique_ptr<AdapterStore>> s = AdapterStore::Open(dir, Shared(grace));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

// The weights file of the entry's current version, as the store verified it.
std::string StoredWeights(const AdapterStore& store, const std::string& id) {
  absl::StatusOr<StoredAdapter> e = store.Find(id);
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return "";
  absl::StatusOr<std::string> data = ReadFileToString(e->source.dir + "/adapter_model.safetensors");
  return data.ok() ? *data : "";
}

TEST(SharedStoreTest, ConcurrentCreatesOfOneIdLeaveOneWholeEntry) {
  const std::string dir = testing::MakeTempDir("shared-store");
  auto a = OpenShared(dir), b = OpenShared(dir);
  ASSERT_TRUE(a && b);
  for (int round = 0; round < 8; ++round) {
    const std::string id = absl::StrCat("x", round);
    // Different sizes, so that a mix of the two would show.
    const std::string wa(1000 + round, 'a'), wb(5000 + round, 'b');
    absl::Notification go;
    absl::Status sa, sb;
    std::thread ta([&] { go.WaitForNotification(); sa = a->Put(id, Upload(wa), false, /*replace=*/false).status(); });
    std::thread tb([&] { go.WaitForNotification(); sb = b->Put(id, Upload(wb), false, /*replace=*/false).status(); });
    go.Notify();
    ta.join();
    tb.join();
    ASSERT_NE(sa.ok(), sb.ok()) << "round " << round << ": " << sa << " / " << sb;
    const absl::Status& lost = sa.ok() ? sb : sa;
    EXPECT_EQ(lost.code(), absl::StatusCode::kAlreadyExists) << lost;
    EXPECT_EQ(StoredWeights(*a, id), sa.ok() ? wa : wb) << "round " << round;
  }
}

TEST(SharedStoreTest, ConcurrentReplacesLeaveOneWholeVersion) {
  const std::string dir = testing::MakeTempDir("shared-store");
  auto a = OpenShared(dir), b = OpenShared(dir);
  ASSERT_TRUE(a && b);
  std::vector<std::string> written;
  for (int i = 0; i < 20; ++i) written.push_back(std::string(100 + 37 * i, static_cast<char>('A' + i)));
  absl::Notification go;
  std::map<std::string, int> stamps;  // every write's stamp is new
  absl::Mutex mu;
  auto writer = [&](AdapterStore* s, int first) {
    go.WaitForNotification();
    for (int i = first; i < 20; i += 2) {
      absl::StatusOr<DiskCopy> put = s->Put("x", Upload(written[i]), false, /*replace=*/true);
      ASSERT_TRUE(put.ok()) << put.status();
      absl::MutexLock lock(&mu);
      ++stamps[put->stamp];
    }
  };
  std::thread ta(writer, a.get(), 0), tb(writer, b.get(), 1);
  go.Notify();
  ta.join();
  tb.join();
  EXPECT_EQ(stamps.size(), 20u);
  const std::string final_weights = StoredWeights(*b, "x");
  EXPECT_NE(std::find(written.begin(), written.end(), final_weights), written.end())
      << "the entry holds none of the versions written whole (" << final_weights.size() << " bytes)";
  const std::vector<ManifestEntry> current = a->Manifests();
  ASSERT_EQ(current.size(), 1u);
  EXPECT_EQ(stamps.count(current[0].stamp), 1u);
}

TEST(SharedStoreTest, SupersededVersionsOutliveTheGracePeriodOnly) {
  const std::string dir = testing::MakeTempDir("shared-store");
  auto kept = OpenShared(dir);
  ASSERT_TRUE(kept);
  absl::StatusOr<DiskCopy> v1 = kept->Put("x", Upload("one"));
  ASSERT_TRUE(v1.ok());
  const std::string v1_dir = v1->dir;
  v1 = absl::CancelledError("let go");  // no hold of this process keeps it
  ASSERT_TRUE(kept->Put("x", Upload("two")).ok());
  kept->SweepSuperseded();
  EXPECT_TRUE(std::filesystem::exists(v1_dir)) << "another server may still read the old version";
  auto swept = OpenShared(dir, absl::ZeroDuration());
  ASSERT_TRUE(swept);
  swept->SweepSuperseded();
  EXPECT_FALSE(std::filesystem::exists(v1_dir));
  EXPECT_EQ(StoredWeights(*swept, "x"), "two");
}

TEST(SharedStoreTest, FindAndStampsSeeOtherServersWrites) {
  const std::string dir = testing::MakeTempDir("shared-store");
  auto a = OpenShared(dir), b = OpenShared(dir);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(b->Find("x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(b->Find("../x").status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<DiskCopy> first = a->Put("x", Upload("one"));
  ASSERT_TRUE(first.ok());
  absl::StatusOr<StoredAdapter> seen = b->Find("x");
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->stamp, first->stamp);
  absl::StatusOr<DiskCopy> second = a->Put("x", Upload("two"));
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->stamp, first->stamp);
  const std::vector<ManifestEntry> seen_twice = b->Manifests();
  ASSERT_EQ(seen_twice.size(), 1u);
  EXPECT_EQ(seen_twice[0].id, "x");
  EXPECT_EQ(seen_twice[0].stamp, second->stamp);
  EXPECT_FALSE(seen_twice[0].pinned);
  EXPECT_TRUE(b->Has("x"));
  ASSERT_TRUE(a->Remove("x").ok());
  EXPECT_TRUE(b->Manifests().empty());
  EXPECT_FALSE(b->Has("x"));
  EXPECT_FALSE(b->Has("../x"));
}

// Two servers' registries on one base model and one shared directory.
class SharedRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto base = testing::LoadDemoModel();
    ASSERT_TRUE(base.ok()) << base.status();
    base_ = *std::move(base);
    const std::string dir = testing::MakeTempDir("shared-registry");
    store_a_ = OpenShared(dir);
    store_b_ = OpenShared(dir);
    ASSERT_TRUE(store_a_ && store_b_);
    a_ = std::make_unique<AdapterRegistry>(base_.get(), store_a_.get());
    b_ = std::make_unique<AdapterRegistry>(base_.get(), store_b_.get());
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
  }

  static absl::StatusOr<AdapterInfo> Load(AdapterRegistry& r, const std::string& id, uint32_t seed, bool replace) {
    absl::Notification done;
    absl::StatusOr<AdapterInfo> result = absl::UnknownError("not called");
    absl::Status st = r.StartLoad(id, UploadSource{testing::QvLora(seed).Files()}, replace,
                                  [&](absl::StatusOr<AdapterInfo> res) {
                                    result = std::move(res);
                                    done.Notify();
                                  });
    if (!st.ok()) return st;
    if (!testing::Await(done, "the load of " + id)) return absl::DeadlineExceededError("load timed out");
    return result;
  }
  static absl::Time Soon() { return absl::Now() + testing::kWaitTimeout; }

  std::unique_ptr<model::LlamaModel> base_;
  std::unique_ptr<AdapterStore> store_a_, store_b_;
  std::unique_ptr<AdapterRegistry> a_, b_;
};

TEST_F(SharedRegistryTest, ARequestLoadsWhatAnotherServerWrote) {
  absl::StatusOr<AdapterInfo> written = Load(*a_, "x", 1, false);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_FALSE(written->store_stamp.empty());
  EXPECT_EQ(b_->Lookup("x").status().code(), absl::StatusCode::kNotFound) << "not loaded on b yet";
  absl::StatusOr<std::shared_ptr<const Adapter>> served = b_->LookupOrLoad("x", Soon());
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ((*served)->info().store_stamp, written->store_stamp);
  EXPECT_TRUE(b_->Lookup("x").ok());
  EXPECT_EQ(b_->LookupOrLoad("absent", Soon()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(b_->LookupOrLoad("../x", Soon()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SharedRegistryTest, AnIdAnotherServerWroteIsTakenUnlessReplaced) {
  ASSERT_TRUE(Load(*a_, "x", 1, false).ok());
  EXPECT_EQ(Load(*b_, "x", 2, false).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(b_->Lookup("x").status().code(), absl::StatusCode::kNotFound) << "a refused load leaves nothing";
  absl::StatusOr<AdapterInfo> replaced = Load(*b_, "x", 2, true);
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(store_a_->Find("x")->stamp, replaced->store_stamp);
}

TEST_F(SharedRegistryTest, SyncAppliesAnotherServersReplaceAndUnload) {
  ASSERT_TRUE(Load(*a_, "x", 1, false).ok());
  ASSERT_TRUE(b_->LookupOrLoad("x", Soon()).ok());
  StoreSync sync(b_.get(), store_b_.get(), absl::ZeroDuration(), nullptr);
  EXPECT_EQ(sync.SyncOnce().replaced, 0) << "nothing changed";
  absl::StatusOr<AdapterInfo> v2 = Load(*a_, "x", 2, true);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(sync.SyncOnce().replaced, 1);
  EXPECT_TRUE(testing::PollUntil(
      [&] {
        absl::StatusOr<AdapterInfo> i = b_->Get("x");
        return i.ok() && i->store_stamp == v2->store_stamp;
      },
      "b serving a's new version"));
  ASSERT_TRUE(a_->Unload("x").ok());
  EXPECT_EQ(sync.SyncOnce().unloaded, 1);
  EXPECT_EQ(b_->Lookup("x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(b_->LookupOrLoad("x", Soon()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SharedRegistryTest, UnloadOnAServerThatDoesNotHoldItDeletesTheEntry) {
  ASSERT_TRUE(Load(*a_, "x", 1, false).ok());
  EXPECT_TRUE(b_->Unload("x").ok());
  EXPECT_EQ(store_a_->Find("x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(b_->Unload("x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(b_->Unload("../etc").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace adapterd::adapters
