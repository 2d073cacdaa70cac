// The registry against its store at the two moments where a store operation
// and a concurrent registry operation on the same id meet. Each test holds
// the store operation at that moment with a hook (tests/fakes/hooked_store.h)
// and acts in the window, so the interleaving is the same in every run.
//
// - An unload deletes the store entry while a load of the same id runs: an
//   acknowledged load must stay recorded, or it is gone after a restart.
// - A replace writes the new version while the old one serves: the old
//   version must read back its own files, and the new one must not be given
//   a directory before its files are there.
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "adapters/adapter_registry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/fakes/hooked_store.h"
#include "tests/support/demo_model.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd::adapters {
namespace {

using ::testing::HasSubstr;

// Notifies `n` on scope exit, so that a failing test never leaves a store
// hook (and the thread in it) waiting.
struct NotifyOnExit {
  absl::Notification& n;
  ~NotifyOnExit() {
    if (!n.HasBeenNotified()) n.Notify();
  }
};

class AdapterRegistryRaceTest : public testing::DemoModelTest {
 protected:
  void SetUp() override {
    store_ = testing::HookedStore::Create(testing::MakeTempDir("race-store") + "/s");
    registry_ = std::make_unique<AdapterRegistry>(base_, store_.get());
  }
  void TearDown() override {
    registry_.reset();
    store_.reset();
  }

  // Queues a load; `done` is notified with the result in `*result`.
  void StartLoad(const std::string& id, const testing::FakeAdapter& a, bool replace,
                 std::shared_ptr<absl::Notification> done, std::shared_ptr<absl::StatusOr<AdapterInfo>> result) {
    absl::Status st = registry_->StartLoad(id, UploadSource{a.Files()}, replace,
                                           [done, result](absl::StatusOr<AdapterInfo> r) {
                                             *result = std::move(r);
                                             done->Notify();
                                           });
    if (!st.ok()) {
      *result = st;
      done->Notify();
    }
  }
  absl::StatusOr<AdapterInfo> Load(const std::string& id, const testing::FakeAdapter& a, bool replace = false) {
    auto done = std::make_shared<absl::Notification>();
    auto result = std::make_shared<absl::StatusOr<AdapterInfo>>(absl::UnknownError("not called"));
    StartLoad(id, a, replace, done, result);
    if (!testing::Await(*done, "the load of " + id)) return absl::DeadlineExceededError("timed out");
    return *result;
  }
  bool Stored(const std::string& id) const {
    for (const StoredAdapter& s : store_->Scan().adapters) {
      if (s.id == id) return true;
    }
    return false;
  }

  std::unique_ptr<testing::HookedStore> store_;
  std::unique_ptr<AdapterRegistry> registry_;
};


TEST_F(AdapterRegistryRaceTest, ALoadThatMeetsAnUnloadOfItsIdIsNeverAcknowledgedAndThenLost) {
  ASSERT_TRUE(Load("x", testing::QvLora(1)).ok());
  absl::Notification in_remove, release_remove;
  NotifyOnExit guard{release_remove};
  store_->before_remove = [&](const std::string&) {
    in_remove.Notify();
    EXPECT_TRUE(testing::Await(release_remove, "the test to let the store delete x"));
  };
  absl::Status unloaded;
  std::thread unloader([&] { unloaded = registry_->Unload("x"); });
  ASSERT_TRUE(testing::Await(in_remove, "the unload to reach the store"));
  // The window: x no longer serves, and its store entry is not deleted yet.
  EXPECT_EQ(registry_->Lookup("x").status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<AdapterInfo> reload = Load("x", testing::QvLora(2));
  release_remove.Notify();
  unloader.join();
  store_->before_remove = nullptr;
  EXPECT_TRUE(unloaded.ok()) << unloaded;
  // What was acknowledged must survive a restart.
  if (reload.ok()) {
    EXPECT_TRUE(Stored("x")) << "the load of x was acknowledged, but the unload deleted its store entry";
  } else {
    EXPECT_EQ(reload.status().code(), absl::StatusCode::kFailedPrecondition) << reload.status();
    EXPECT_THAT(reload.status().message(), HasSubstr("being unloaded"));
  }
  EXPECT_FALSE(reload.ok() && !registry_->Lookup("x").ok());
  // Once the unload has returned, the id loads and is recorded again.
  ASSERT_TRUE(Load("x", testing::QvLora(3)).ok());
  EXPECT_TRUE(Stored("x"));
}

TEST_F(AdapterRegistryRaceTest, AReplaceNeverLetsAVersionReadAnotherVersionsFiles) {
  const testing::FakeAdapter v1 = testing::QvLora(1);
  const testing::FakeAdapter v2 = testing::DemoLora({.r = 8, .seed = 2});  // other weights, other size
  ASSERT_TRUE(Load("x", v1).ok());
  ASSERT_TRUE(registry_->Unload("x", /*keep_on_disk=*/true).ok());  // v1 now only on disk
  absl::StatusOr<std::shared_ptr<const Adapter>> old = registry_->Lookup("x");
  ASSERT_TRUE(old.ok()) << old.status();

  absl::Notification in_put, release_put, written, release_swap;
  NotifyOnExit guard_put{release_put}, guard_swap{release_swap};
  store_->before_put = [&](const std::string&) {
    in_put.Notify();
    EXPECT_TRUE(testing::Await(release_put, "the test to let the store write v2"));
  };
  store_->after_put = [&](const std::string&) {
    written.Notify();
    EXPECT_TRUE(testing::Await(release_swap, "the test to let the registry swap v2 in"));
  };
  auto done = std::make_shared<absl::Notification>();
  auto result = std::make_shared<absl::StatusOr<AdapterInfo>>(absl::UnknownError("not called"));
  StartLoad("x", v2, /*replace=*/true, done, result);

  // Before the store has v2's files, the cache knows no directory for v2:
  // only v1 can be read back from disk.
  ASSERT_TRUE(testing::Await(in_put, "the replace to reach the store"));
  EXPECT_EQ(registry_->cache().GetStats().disk_adapters, 1) << "v2 was given a directory before its files were written";
  release_put.Notify();

  // v2 is written, and v1 still serves: a request for x now reads v1 back
  // from disk and must get v1, not v2's files under v1's name.
  ASSERT_TRUE(testing::Await(written, "the store to write v2"));
  std::shared_ptr<model::AdapterLease> lease = (*old)->Lease();
  absl::Notification settled;
  lease->NotifyWhenSettled([&] { settled.Notify(); });
  ASSERT_TRUE(testing::Await(settled, "v1 to come back from disk"));
  absl::StatusOr<const model::AdapterWeights*> w = lease->weights();
  ASSERT_TRUE(w.ok()) << w.status();
  absl::StatusOr<AdapterFiles> files = AdapterFilesFromUpload(v1.Files());
  ASSERT_TRUE(files.ok());
  absl::StatusOr<LoadedAdapter> direct = LoadAdapter(*files, *base_);
  ASSERT_TRUE(direct.ok());
  EXPECT_LT(testing::MaxDiff(testing::PromptLogits(*base_, *w), testing::PromptLogits(*base_, direct->weights.get())),
            1e-6);
  release_swap.Notify();
  ASSERT_TRUE(testing::Await(*done, "the replace to finish"));
  ASSERT_TRUE(result->ok()) << result->status();
  EXPECT_EQ((*result)->bytes, 2 * 57344);  // q,v r=8 over the demo model's 4 layers, float32
  store_->before_put = nullptr;
  store_->after_put = nullptr;
}

}  // namespace
}  // namespace adapterd::adapters
