// AdapterRegistry lifecycle against the demo base model: asynchronous loads
// (by path and by upload), duplicate and replacing loads, id validation,
// failed loads that leave nothing behind, unloads that keep running holders'
// weights alive until they let go, and concurrent load/lookup/unload.
#include "adapters/adapter_registry.h"

#include <ATen/ATen.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "adapters/kind_loaders.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/adapter_registry_fixture.h"
#include "tests/support/demo_model.h"
#include "tests/support/resident_weights.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd::adapters {
namespace {

using model::Proj;
using ::testing::ElementsAre;

using testing::DemoLora;
using testing::FakeAdapter;
using testing::IsError;
using testing::LoraKey;
using testing::MaxDiff;
using testing::QvLora;
using registry_test::AdapterRegistryTest;
using registry_test::kLayers;
using registry_test::kLoadTimeout;
using registry_test::kQvBytes;
using registry_test::NotifyOnExit;
using registry_test::SettledLiveBytes;
using registry_test::Snapshot;

// ------------------------------------------------------------ lifecycle -----

TEST_F(AdapterRegistryTest, LoadByPathBecomesReady) {
  EXPECT_TRUE(reg().List().empty());
  EXPECT_EQ(reg().live_bytes(), 0);
  absl::StatusOr<AdapterInfo> info = Load("qv", PathSource{qv_dir()});
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->id, "qv");
  EXPECT_EQ(info->state, AdapterState::kReady);
  EXPECT_EQ(info->summary.type, "lora");
  EXPECT_FALSE(info->summary.type == "dora");
  EXPECT_THAT(info->summary.ranks, ElementsAre(4));
  EXPECT_THAT(info->summary.target_modules, ElementsAre("q_proj", "v_proj"));
  EXPECT_EQ(info->source, qv_dir());
  EXPECT_EQ(info->bytes, kQvBytes);
  EXPECT_GE(info->load_duration, absl::ZeroDuration());
  EXPECT_LE(info->loaded_at, absl::Now());
  EXPECT_GT(info->loaded_at, absl::Now() - absl::Minutes(10));

  absl::StatusOr<std::shared_ptr<const Adapter>> a = reg().Lookup("qv");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_NE(*a, nullptr);
  EXPECT_EQ((*a)->id(), "qv");
  const model::LoraModule* q = testing::ResidentWeights(**a).Find(2, Proj::kQ);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->rank(), 4);
  EXPECT_DOUBLE_EQ(q->scale, 2.0);
  EXPECT_EQ(testing::ResidentWeights(**a).bytes(), kQvBytes);

  absl::StatusOr<AdapterInfo> got = reg().Get("qv");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->state, AdapterState::kReady);
  EXPECT_EQ(AdapterStateName(got->state), "ready");
  EXPECT_THAT(got->summary.ranks, ElementsAre(4));
  EXPECT_EQ(got->bytes, kQvBytes);

  const std::vector<AdapterInfo> list = reg().List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, "qv");
  EXPECT_EQ(list[0].state, AdapterState::kReady);
  EXPECT_THAT(list[0].summary.ranks, ElementsAre(4));
  EXPECT_EQ(list[0].bytes, kQvBytes);
  EXPECT_EQ(reg().ready_count(), 1);
  EXPECT_EQ(reg().live_bytes(), kQvBytes);

  // Served requests are counted on the adapter.
  (*a)->RecordRequest(5);
  (*a)->RecordRequest(7);
  got = reg().Get("qv");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->requests_served, 2);
  EXPECT_EQ(got->tokens_generated, 12);

  // The looked-up weights run through the model and change its output.
  EXPECT_GT(MaxDiff(Logits(&testing::ResidentWeights(**a)), Logits(nullptr)), 1e-3);
}

TEST_F(AdapterRegistryTest, LookupAndGetOfUnknownIdsAreNotFound) {
  EXPECT_TRUE(IsError(reg().Lookup("nope").status(), absl::StatusCode::kNotFound, {"nope"}));
  EXPECT_TRUE(IsError(reg().Get("nope").status(), absl::StatusCode::kNotFound, {"nope"}));
  EXPECT_EQ(reg().ready_count(), 0);
}

TEST_F(AdapterRegistryTest, UploadWorksLikePath) {
  const FakeAdapter qv = QvLora();
  absl::StatusOr<AdapterInfo> up = Load("up", UploadSource{qv.Files()});
  ASSERT_TRUE(up.ok()) << up.status();
  absl::StatusOr<AdapterInfo> path = Load("path", PathSource{qv_dir()});
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(up->source, "upload");
  EXPECT_EQ(up->state, AdapterState::kReady);
  EXPECT_EQ(up->bytes, path->bytes);
  EXPECT_EQ(up->summary.ranks, path->summary.ranks);
  EXPECT_EQ(up->summary.target_modules, path->summary.target_modules);
  EXPECT_EQ(up->summary.type, "lora");

  absl::StatusOr<std::shared_ptr<const Adapter>> a = reg().Lookup("up");
  absl::StatusOr<std::shared_ptr<const Adapter>> b = reg().Lookup("path");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  for (int64_t l = 0; l < kLayers; ++l) {
    for (Proj p : {Proj::kQ, Proj::kV}) {
      ASSERT_NE(testing::ResidentWeights(**a).Find(l, p), nullptr);
      EXPECT_TRUE(at::equal(testing::ResidentWeights(**a).Find(l, p)->a, testing::ResidentWeights(**b).Find(l, p)->a));
      EXPECT_TRUE(at::equal(testing::ResidentWeights(**a).Find(l, p)->b, testing::ResidentWeights(**b).Find(l, p)->b));
    }
  }
  EXPECT_THAT(Snapshot(reg().List()),
              ElementsAre(absl::StrCat("path|ready|lora|", kQvBytes, "|", qv_dir()),
                          absl::StrCat("up|ready|lora|", kQvBytes, "|upload")));
  EXPECT_EQ(reg().live_bytes(), 2 * kQvBytes);
}

TEST_F(AdapterRegistryTest, DoraAdapterIsListedAsDora) {
  FakeAdapter d = QvLora(3);
  d.config["use_dora"] = true;
  for (int64_t l = 0; l < kLayers; ++l) {
    d.Add(LoraKey(l, "self_attn.q_proj", "lora_magnitude_vector"), {256}, 70 + l, 1.0f);
    d.Add(LoraKey(l, "self_attn.v_proj", "lora_magnitude_vector"), {128}, 80 + l, 1.0f);
  }
  absl::StatusOr<AdapterInfo> info = Load("dora", UploadSource{d.Files()});
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->summary.type, "dora");
  EXPECT_TRUE(info->summary.type == "dora");
  EXPECT_EQ(info->bytes, kQvBytes + kLayers * (256 + 128) * 4);
}

TEST_F(AdapterRegistryTest, DuplicateIdIsAlreadyExistsAndChangesNothing) {
  ASSERT_TRUE(Load("qv", PathSource{qv_dir()}).ok());
  absl::StatusOr<std::shared_ptr<const Adapter>> before = reg().Lookup("qv");
  ASSERT_TRUE(before.ok());
  const std::vector<std::string> listed = Snapshot(reg().List());

  bool called = false;
  const FakeAdapter o = DemoLora({.r = 2, .alpha = 4, .targets = {"o_proj"}, .seed = 9});
  absl::Status s = reg().StartLoad("qv", UploadSource{o.Files()}, /*replace=*/false,
                                   [&called](absl::StatusOr<AdapterInfo>) { called = true; });
  EXPECT_TRUE(IsError(s, absl::StatusCode::kAlreadyExists, {"qv", "replace"}));

  // Another load goes through the same loader thread: once it is done, a
  // queued duplicate would have run too.
  ASSERT_TRUE(Load("other", PathSource{qv_dir()}).ok());
  EXPECT_FALSE(called);
  ASSERT_TRUE(reg().Unload("other").ok());

  EXPECT_EQ(Snapshot(reg().List()), listed);
  absl::StatusOr<std::shared_ptr<const Adapter>> after = reg().Lookup("qv");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->get(), before->get());
  EXPECT_EQ(SettledLiveBytes(reg(), kQvBytes), kQvBytes);
}

TEST_F(AdapterRegistryTest, ReplaceSwapsAndKeepsOldReferenceUsable) {
  ASSERT_TRUE(Load("swap", PathSource{qv_dir()}).ok());
  absl::StatusOr<std::shared_ptr<const Adapter>> old = reg().Lookup("swap");
  ASSERT_TRUE(old.ok());
  const at::Tensor old_logits = Logits(&testing::ResidentWeights(**old));

  const FakeAdapter next = DemoLora({.r = 8, .alpha = 16, .targets = {"o_proj", "down_proj"}, .seed = 500});
  absl::StatusOr<AdapterInfo> info = Load("swap", UploadSource{next.Files()}, /*replace=*/true);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_THAT(info->summary.ranks, ElementsAre(8));
  EXPECT_THAT(info->summary.target_modules, ElementsAre("down_proj", "o_proj"));
  EXPECT_EQ(info->source, "upload");
  const int64_t next_bytes = kLayers * (8 * 256 + 256 * 8 + 8 * 688 + 256 * 8) * 4;
  EXPECT_EQ(info->bytes, next_bytes);

  absl::StatusOr<std::shared_ptr<const Adapter>> now = reg().Lookup("swap");
  ASSERT_TRUE(now.ok());
  EXPECT_NE(now->get(), old->get());
  EXPECT_EQ(testing::ResidentWeights(**now).Find(0, Proj::kQ), nullptr);
  ASSERT_NE(testing::ResidentWeights(**now).Find(0, Proj::kO), nullptr);
  EXPECT_EQ(testing::ResidentWeights(**now).Find(0, Proj::kO)->rank(), 8);
  ASSERT_EQ(reg().List().size(), 1u);
  EXPECT_EQ(reg().List()[0].source, "upload");
  EXPECT_EQ(reg().List()[0].bytes, next_bytes);

  // The old version still works for whoever holds it, with its own weights.
  ASSERT_NE(testing::ResidentWeights(**old).Find(1, Proj::kQ), nullptr);
  EXPECT_EQ(testing::ResidentWeights(**old).Find(1, Proj::kQ)->rank(), 4);
  EXPECT_LT(MaxDiff(Logits(&testing::ResidentWeights(**old)), old_logits), 1e-6);
  EXPECT_GT(MaxDiff(Logits(&testing::ResidentWeights(**now)), old_logits), 1e-3);
  EXPECT_EQ(reg().live_bytes(), kQvBytes + next_bytes);
  old->reset();
  EXPECT_EQ(SettledLiveBytes(reg(), next_bytes), next_bytes);
}

// LoadDone reports a finished swap: by then the replaced version, which
// nobody holds, must be gone (its memory back), not kept alive by the loader
// thread until the callback returns.
TEST_F(AdapterRegistryTest, LoadDoneRunsAfterTheReplacedVersionIsReleased) {
  ASSERT_TRUE(Load("r", PathSource{qv_dir()}).ok());
  EXPECT_EQ(SettledLiveBytes(reg(), kQvBytes), kQvBytes);
  const int64_t next_bytes = kLayers * (2 * 256 + 256 * 2) * 4;
  auto seen = std::make_shared<std::atomic<int64_t>>(-1);
  auto done = std::make_shared<absl::Notification>();
  AdapterRegistry* r = &reg();
  const FakeAdapter o = DemoLora({.r = 2, .alpha = 4, .targets = {"o_proj"}, .seed = 9});
  ASSERT_TRUE(reg().StartLoad("r", UploadSource{o.Files()}, true,
                              [r, seen, done](absl::StatusOr<AdapterInfo> res) {
                                EXPECT_TRUE(res.ok()) << res.status();
                                seen->store(r->live_bytes());
                                done->Notify();
                              })
                  .ok());
  ASSERT_TRUE(done->WaitForNotificationWithTimeout(kLoadTimeout));
  EXPECT_EQ(seen->load(), next_bytes)
      << "live_bytes() during LoadDone still counts the replaced version";
  EXPECT_EQ(SettledLiveBytes(reg(), next_bytes), next_bytes);
}

TEST_F(AdapterRegistryTest, FailedReplaceKeepsTheOldVersion) {
  ASSERT_TRUE(Load("keep", PathSource{qv_dir()}).ok());
  absl::StatusOr<std::shared_ptr<const Adapter>> before = reg().Lookup("keep");
  ASSERT_TRUE(before.ok());
  FakeAdapter bad = QvLora();
  bad.Remove(LoraKey(1, "self_attn.q_proj", "lora_B.weight"));
  absl::StatusOr<AdapterInfo> r = Load("keep", UploadSource{bad.Files()}, /*replace=*/true);
  EXPECT_TRUE(IsError(r.status(), absl::StatusCode::kInvalidArgument, {"missing tensor"}));
  absl::StatusOr<std::shared_ptr<const Adapter>> after = reg().Lookup("keep");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->get(), before->get());
  ASSERT_EQ(reg().List().size(), 1u);
  EXPECT_EQ(reg().List()[0].state, AdapterState::kReady);
  EXPECT_EQ(reg().List()[0].source, qv_dir());
  EXPECT_EQ(reg().live_bytes(), kQvBytes);
  // And it may be replaced again afterwards.
  EXPECT_TRUE(Load("keep", PathSource{qv_dir()}, /*replace=*/true).ok());
}

TEST_F(AdapterRegistryTest, InvalidIdsAreRejected) {
  const std::vector<std::string> bad = {"", "../x", "a b", std::string(200, 'a'), "-x", ".x", "_x",
                                        "a/b", "x\n", std::string(129, 'b'), "caf\xc3\xa9"};
  for (const std::string& id : bad) {
    SCOPED_TRACE(absl::StrCat("id '", id, "'"));
    EXPECT_TRUE(IsError(AdapterRegistry::ValidateId(id), absl::StatusCode::kInvalidArgument, {"adapter_id"}));
    bool called = false;
    EXPECT_TRUE(IsError(reg().StartLoad(id, PathSource{qv_dir()}, false,
                                        [&called](absl::StatusOr<AdapterInfo>) { called = true; }),
                        absl::StatusCode::kInvalidArgument, {"adapter_id"}));
    EXPECT_TRUE(IsError(reg().StartLoad(id, PathSource{qv_dir()}, true, nullptr),
                        absl::StatusCode::kInvalidArgument, {"adapter_id"}));
    EXPECT_FALSE(called);
  }
  EXPECT_TRUE(reg().List().empty());
  for (const std::string& id : {std::string("a"), std::string("0"), std::string(128, 'z'),
                                std::string("My.adapter_v2-1")}) {
    EXPECT_TRUE(AdapterRegistry::ValidateId(id).ok()) << id;
  }
  // A valid 128-character id loads.
  EXPECT_TRUE(Load(std::string(128, 'z'), PathSource{qv_dir()}).ok());
  EXPECT_EQ(reg().List().size(), 1u);
}

// ------------------------------------------------------------- unload ------

TEST_F(AdapterRegistryTest, UnloadHidesAtOnceButHoldersKeepTheWeights) {
  ASSERT_TRUE(Load("u", PathSource{qv_dir()}).ok());
  absl::StatusOr<std::shared_ptr<const Adapter>> held = reg().Lookup("u");
  ASSERT_TRUE(held.ok());
  const at::Tensor before = Logits(&testing::ResidentWeights(**held));
  const model::LoraModule* q = testing::ResidentWeights(**held).Find(0, Proj::kQ);
  ASSERT_NE(q, nullptr);
  c10::weak_intrusive_ptr<c10::StorageImpl> storage = q->a.storage().getWeakStorageImpl();
  EXPECT_EQ(reg().live_bytes(), kQvBytes);

  ASSERT_TRUE(reg().Unload("u").ok());
  EXPECT_TRUE(IsError(reg().Lookup("u").status(), absl::StatusCode::kNotFound, {"u"}));
  EXPECT_TRUE(IsError(reg().Get("u").status(), absl::StatusCode::kNotFound, {"u"}));
  EXPECT_TRUE(reg().List().empty());
  EXPECT_EQ(reg().ready_count(), 0);
  EXPECT_TRUE(IsError(reg().Unload("u"), absl::StatusCode::kNotFound, {"u"}));

  // The running request still has its adapter, unchanged.
  EXPECT_EQ(reg().live_bytes(), kQvBytes);
  EXPECT_FALSE(storage.expired());
  EXPECT_LT(MaxDiff(Logits(&testing::ResidentWeights(**held)), before), 1e-6);
  (*held)->RecordRequest(3);
  EXPECT_EQ((*held)->info().tokens_generated, 3);

  // The id may be loaded again while the old one is still held.
  ASSERT_TRUE(Load("u", PathSource{qv_dir()}).ok());
  EXPECT_EQ(reg().live_bytes(), 2 * kQvBytes);
  ASSERT_TRUE(reg().Unload("u").ok());
  EXPECT_EQ(SettledLiveBytes(reg(), kQvBytes), kQvBytes);
  EXPECT_FALSE(storage.expired());

  // The last holder lets go: the tensors are freed.
  held->reset();
  EXPECT_TRUE(storage.expired());
  EXPECT_EQ(reg().live_bytes(), 0);
}

TEST_F(AdapterRegistryTest, UnloadOfUnknownIdIsNotFound) {
  EXPECT_TRUE(IsError(reg().Unload("ghost"), absl::StatusCode::kNotFound, {"ghost"}));
  ASSERT_TRUE(Load("real", PathSource{qv_dir()}).ok());
  EXPECT_TRUE(IsError(reg().Unload("ghost"), absl::StatusCode::kNotFound, {"ghost"}));
  EXPECT_EQ(reg().List().size(), 1u);
}

// ------------------------------------------------- while a load is queued --

// The loader thread runs LoadDone callbacks; blocking one keeps the next load
// queued, so the "loading" state can be observed deterministically.
TEST_F(AdapterRegistryTest, StatesWhileALoadIsQueued) {
  auto entered = std::make_shared<absl::Notification>();
  auto release = std::make_shared<absl::Notification>();
  NotifyOnExit guard{release};
  ASSERT_TRUE(reg().StartLoad("blocker", PathSource{qv_dir()}, false,
                              [entered, release](absl::StatusOr<AdapterInfo> r) {
                                EXPECT_TRUE(r.ok()) << r.status();
                                entered->Notify();
                                EXPECT_TRUE(testing::Await(*release, "the test to release the loader"));
                              })
                  .ok());
  ASSERT_TRUE(entered->WaitForNotificationWithTimeout(kLoadTimeout));
  absl::StatusOr<std::shared_ptr<const Adapter>> blocker_v1 = reg().Lookup("blocker");
  ASSERT_TRUE(blocker_v1.ok()) << blocker_v1.status();

  auto pending_done = std::make_shared<absl::Notification>();
  ASSERT_TRUE(reg().StartLoad("pending", UploadSource{QvLora(5).Files()}, false,
                              [pending_done](absl::StatusOr<AdapterInfo> r) {
                                EXPECT_TRUE(r.ok()) << r.status();
                                pending_done->Notify();
                              })
                  .ok());
  EXPECT_TRUE(IsError(reg().Lookup("pending").status(), absl::StatusCode::kUnavailable, {"pending"}));
  absl::StatusOr<AdapterInfo> info = reg().Get("pending");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state, AdapterState::kLoading);
  EXPECT_EQ(info->source, "upload");
  // The kind is known only once the files are parsed.
  EXPECT_THAT(Snapshot(reg().List()),
              ElementsAre(absl::StrCat("blocker|ready|lora|", kQvBytes, "|", qv_dir()), "pending|loading||0|upload"));
  EXPECT_EQ(reg().ready_count(), 1);
  EXPECT_TRUE(IsError(reg().Unload("pending"), absl::StatusCode::kFailedPrecondition, {"pending"}));
  EXPECT_TRUE(IsError(reg().StartLoad("pending", PathSource{qv_dir()}, true, nullptr),
                      absl::StatusCode::kFailedPrecondition, {"pending"}));
  EXPECT_TRUE(IsError(reg().StartLoad("pending", PathSource{qv_dir()}, false, nullptr),
                      absl::StatusCode::kFailedPrecondition, {"pending"}));

  // A replacing load keeps the old version serving until the new one is ready.
  auto replaced = std::make_shared<absl::Notification>();
  ASSERT_TRUE(reg().StartLoad("blocker", UploadSource{QvLora(6).Files()}, true,
                              [replaced](absl::StatusOr<AdapterInfo> r) {
                                EXPECT_TRUE(r.ok()) << r.status();
                                replaced->Notify();
                              })
                  .ok());
  absl::StatusOr<std::shared_ptr<const Adapter>> during = reg().Lookup("blocker");
  ASSERT_TRUE(during.ok()) << during.status();
  EXPECT_EQ(during->get(), blocker_v1->get());
  EXPECT_TRUE(IsError(reg().Unload("blocker"), absl::StatusCode::kFailedPrecondition, {"blocker"}));
  EXPECT_TRUE(IsError(reg().StartLoad("blocker", PathSource{qv_dir()}, true, nullptr),
                      absl::StatusCode::kFailedPrecondition, {"blocker"}));
  EXPECT_FALSE(pending_done->HasBeenNotified());

  release->Notify();
  ASSERT_TRUE(pending_done->WaitForNotificationWithTimeout(kLoadTimeout));
  ASSERT_TRUE(replaced->WaitForNotificationWithTimeout(kLoadTimeout));
  EXPECT_TRUE(reg().Lookup("pending").ok());
  absl::StatusOr<std::shared_ptr<const Adapter>> v2 = reg().Lookup("blocker");
  ASSERT_TRUE(v2.ok());
  EXPECT_NE(v2->get(), blocker_v1->get());
  EXPECT_EQ((*v2)->info().source, "upload");
  EXPECT_EQ(reg().ready_count(), 2);
}

TEST_F(AdapterRegistryTest, DestructorFinishesQueuedLoads) {
  auto count = std::make_shared<std::atomic<int>>(0);
  auto ok = std::make_shared<std::atomic<int>>(0);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(reg().StartLoad(absl::StrCat("q", i), PathSource{qv_dir()}, false,
                                [count, ok](absl::StatusOr<AdapterInfo> r) {
                                  ok->fetch_add(r.ok() ? 1 : 0);
                                  count->fetch_add(1);
                                })
                    .ok());
  }
  registry_.reset();
  EXPECT_EQ(count->load(), 3);
  EXPECT_EQ(ok->load(), 3);
}

// --------------------------------------------------------- concurrency -----

TEST_F(AdapterRegistryTest, ConcurrentLoadLookupUnload) {
  constexpr int kWriters = 3;
  constexpr int kIterations = 30;
  const std::map<std::string, std::string> upload = QvLora().Files();
  std::atomic<bool> stop{false};
  std::atomic<int64_t> lookups_ok{0}, lookups_total{0}, bad_codes{0}, writer_failures{0};

  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      const std::string id = absl::StrCat("w", w);
      for (int i = 0; i < kIterations; ++i) {
        AdapterSource source = (i % 2 == 0) ? AdapterSource(PathSource{qv_dir()}) : AdapterSource(UploadSource{upload});
        absl::StatusOr<AdapterInfo> info = Load(reg(), id, source);
        if (!info.ok() || info->bytes != kQvBytes) {
          ADD_FAILURE() << id << " iteration " << i << ": " << info.status();
          writer_failures.fetch_add(1);
          continue;
        }
        absl::StatusOr<std::shared_ptr<const Adapter>> a = reg().Lookup(id);
        if (!a.ok() || testing::ResidentWeights(**a).Find(3, Proj::kV) == nullptr) {
          ADD_FAILURE() << id << " lookup after load: " << a.status();
          writer_failures.fetch_add(1);
        }
        absl::Status u = reg().Unload(id);
        if (!u.ok()) {
          ADD_FAILURE() << id << " unload: " << u;
          writer_failures.fetch_add(1);
        }
        if (reg().Lookup(id).status().code() != absl::StatusCode::kNotFound) {
          ADD_FAILURE() << id << " still found after unload";
          writer_failures.fetch_add(1);
        }
      }
    });
  }
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        for (int w = 0; w < kWriters; ++w) {
          absl::StatusOr<std::shared_ptr<const Adapter>> a = reg().Lookup(absl::StrCat("w", w));
          lookups_total.fetch_add(1);
          switch (a.status().code()) {
            case absl::StatusCode::kOk: {
              const model::LoraModule* q = testing::ResidentWeights(**a).Find(0, Proj::kQ);
              if (q == nullptr || q->rank() != 4 || (*a)->info().bytes != kQvBytes) bad_codes.fetch_add(1);
              lookups_ok.fetch_add(1);
              break;
            }
            case absl::StatusCode::kNotFound:
            case absl::StatusCode::kUnavailable:
              break;
            default:
              ADD_FAILURE() << "unexpected lookup status " << a.status();
              bad_codes.fetch_add(1);
          }
        }
        for (const AdapterInfo& i : reg().List()) {
          if (i.state != AdapterState::kReady && i.state != AdapterState::kLoading) bad_codes.fetch_add(1);
        }
        std::this_thread::yield();
      }
    });
  }
  for (std::thread& t : writers) t.join();
  stop.store(true);
  for (std::thread& t : readers) t.join();

  EXPECT_EQ(writer_failures.load(), 0);
  EXPECT_EQ(bad_codes.load(), 0);
  EXPECT_GT(lookups_total.load(), 0);
  std::cout << "lookups: " << lookups_total.load() << " total, " << lookups_ok.load() << " ok\n";
  EXPECT_TRUE(reg().List().empty());
  EXPECT_EQ(reg().ready_count(), 0);
  EXPECT_EQ(SettledLiveBytes(reg(), 0), 0);
}

}  // namespace
}  // namespace adapterd::adapters
