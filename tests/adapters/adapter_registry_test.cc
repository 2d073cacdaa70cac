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
#include "tests/support/demo_model.h"
#include "tests/support/resident_weights.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd::adapters {
namespace {

namespace fs = std::filesystem;
using model::Proj;
using model::StDType;
using ::testing::ElementsAre;

using testing::DemoLora;
using testing::FakeAdapter;
using testing::IsError;
using testing::LoraKey;
using testing::MaxDiff;
using testing::QvLora;

constexpr int64_t kLayers = 4;
constexpr int64_t kQvBytes = 57344;  // q,v r=4 over 4 layers, float32
const absl::Duration kLoadTimeout = absl::Seconds(120);

// What the registry lists, reduced to comparable values.
std::vector<std::string> Snapshot(const std::vector<AdapterInfo>& list) {
  std::vector<std::string> out;
  for (const AdapterInfo& i : list) {
    out.push_back(absl::StrCat(i.id, "|", std::string(AdapterStateName(i.state)), "|", i.summary.type, "|", i.bytes,
                               "|", i.source));
  }
  return out;
}

// live_bytes() once it reaches `want`, or after 10 s. The loader thread may
// still be finishing the iteration that ran a LoadDone callback (see
// LoadDoneRunsAfterTheReplacedVersionIsReleased for the strict check).
int64_t SettledLiveBytes(const AdapterRegistry& r, int64_t want) {
  testing::PollUntil([&] { return r.live_bytes() == want; }, absl::StrCat("live_bytes() to reach ", want),
                     absl::Seconds(10));
  return r.live_bytes();
}

// Frees `n` on scope exit so that a failing test never leaves the loader
// thread blocked in a callback.
struct NotifyOnExit {
  std::shared_ptr<absl::Notification> n;
  ~NotifyOnExit() {
    if (!n->HasBeenNotified()) n->Notify();
  }
};

class AdapterRegistryTest : public testing::DemoModelTest {
 protected:
  static void SetUpTestSuite() {
    DemoModelTest::SetUpTestSuite();
    qv_dir_ = new std::string(QvLora().Write("qv-shared"));
  }
  static void TearDownTestSuite() {
    DemoModelTest::TearDownTestSuite();
    delete qv_dir_;
    qv_dir_ = nullptr;
  }
  void SetUp() override {
    DemoModelTest::SetUp();
    if (HasFatalFailure()) return;
    registry_ = std::make_unique<AdapterRegistry>(base_);
  }
  void TearDown() override {
    registry_.reset();
  }

  AdapterRegistry& reg() { return *registry_; }
  static const std::string& qv_dir() { return *qv_dir_; }

  // Starts a load and waits for its LoadDone. A StartLoad error is returned as is.
  static absl::StatusOr<AdapterInfo> Load(AdapterRegistry& r, const std::string& id, AdapterSource source,
                                          bool replace = false) {
    struct State {
      absl::Notification done;
      absl::StatusOr<AdapterInfo> result = absl::UnknownError("LoadDone not called");
    };
    auto state = std::make_shared<State>();
    absl::Status started = r.StartLoad(id, std::move(source), replace, [state](absl::StatusOr<AdapterInfo> res) {
      state->result = std::move(res);
      state->done.Notify();
    });
    if (!started.ok()) return started;
    if (!state->done.WaitForNotificationWithTimeout(kLoadTimeout)) {
      return absl::DeadlineExceededError("LoadDone not called in time");
    }
    return state->result;
  }
  absl::StatusOr<AdapterInfo> Load(const std::string& id, AdapterSource source, bool replace = false) {
    return Load(reg(), id, std::move(source), replace);
  }

  // Last-token logits [1, vocab] of a fixed prompt through the base with `adapter` (null = base).
  static at::Tensor Logits(const model::AdapterWeights* adapter) { return testing::PromptLogits(base(), adapter); }

  static std::string* qv_dir_;
  std::unique_ptr<AdapterRegistry> registry_;
};

std::string* AdapterRegistryTest::qv_dir_ = nullptr;

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

// ------------------------------------------------------- failed loads ------

struct BadCase {
  std::string name;
  absl::StatusCode code;
  std::string substring;
  std::function<void(FakeAdapter&)> edit;                          // before writing
  std::function<void(const std::string& dir)> edit_dir;            // PathSource only
  std::function<void(std::map<std::string, std::string>&)> edit_upload;  // set: UploadSource
};

std::vector<BadCase> BadCases() {
  using C = absl::StatusCode;
  std::vector<BadCase> cases;
  cases.push_back({"lora_A wrong shape", C::kFailedPrecondition, "expected [4, 256]", [](FakeAdapter& a) {
                     a.Replace(LoraKey(1, "self_attn.q_proj", "lora_A.weight"), {4, 128}, 9);
                   }, nullptr, nullptr});
  cases.push_back({"missing lora_B", C::kInvalidArgument, LoraKey(2, "self_attn.v_proj", "lora_B.weight"),
                   [](FakeAdapter& a) { a.Remove(LoraKey(2, "self_attn.v_proj", "lora_B.weight")); }, nullptr,
                   nullptr});
  cases.push_back({"targeted module without tensors", C::kInvalidArgument,
                   LoraKey(3, "self_attn.q_proj", "lora_A.weight"),
                   [](FakeAdapter& a) {
                     a.Remove(LoraKey(3, "self_attn.q_proj", "lora_A.weight"));
                     a.Remove(LoraKey(3, "self_attn.q_proj", "lora_B.weight"));
                   },
                   nullptr, nullptr});
  cases.push_back({"unknown module", C::kFailedPrecondition, "unknown target", [](FakeAdapter& a) {
                     a.Add(LoraKey(0, "self_attn.rotary", "lora_A.weight"), {4, 32}, 9);
                   }, nullptr, nullptr});
  cases.push_back({"layer 9", C::kFailedPrecondition, "layer 9 does not exist", [](FakeAdapter& a) {
                     a.Add(LoraKey(9, "self_attn.q_proj", "lora_A.weight"), {4, 256}, 9);
                     a.Add(LoraKey(9, "self_attn.q_proj", "lora_B.weight"), {256, 4}, 10);
                   }, nullptr, nullptr});
  cases.push_back({"lora_embedding_A", C::kFailedPrecondition, "lora_embedding_A", [](FakeAdapter& a) {
                     a.Add("base_model.model.model.embed_tokens.lora_embedding_A", {4, 2048}, 9);
                   }, nullptr, nullptr});
  cases.push_back({"lm_head", C::kInvalidArgument, "base_model.model.lm_head.lora_A.weight", [](FakeAdapter& a) {
                     a.Add("base_model.model.lm_head.lora_A.weight", {4, 256}, 9);
                     a.Add("base_model.model.lm_head.lora_B.weight", {2048, 4}, 10);
                   }, nullptr, nullptr});
  cases.push_back({"lora_B.bias", C::kInvalidArgument, LoraKey(0, "self_attn.q_proj", "lora_B.bias"),
                   [](FakeAdapter& a) { a.Add(LoraKey(0, "self_attn.q_proj", "lora_B.bias"), {256}, 9); }, nullptr,
                   nullptr});
  cases.push_back({"dora without magnitudes", C::kInvalidArgument, "lora_magnitude_vector",
                   [](FakeAdapter& a) { a.config["use_dora"] = true; }, nullptr, nullptr});
  cases.push_back({"magnitude without use_dora", C::kInvalidArgument, "use_dora is false", [](FakeAdapter& a) {
                     a.Add(LoraKey(0, "self_attn.q_proj", "lora_magnitude_vector"), {256}, 9, 1.0f);
                   }, nullptr, nullptr});
  cases.push_back({"I32 dtype", C::kInvalidArgument, "dtype I32",
                   [](FakeAdapter& a) {
                     a.Find(LoraKey(0, "self_attn.v_proj", "lora_A.weight"))->dtype = StDType::kI32;
                   },
                   nullptr, nullptr});
  cases.push_back({"unknown bias", C::kInvalidArgument, "'bias'", [](FakeAdapter& a) { a.config["bias"] = "most"; },
                   nullptr, nullptr});
  cases.push_back({"head wider than the hidden size", C::kFailedPrecondition, "base_model.model.score.weight",
                   [](FakeAdapter& a) {
                     a.config["task_type"] = "SEQ_CLS";
                     a.Add("base_model.model.score.weight", {3, 257}, 9);
                   },
                   nullptr, nullptr});
  cases.push_back({"modules_to_save names a module the base lacks", C::kFailedPrecondition, "value_head",
                   [](FakeAdapter& a) { a.config["modules_to_save"] = {"value_head"}; }, nullptr, nullptr});
  cases.push_back({"trainable token beyond the vocabulary", C::kFailedPrecondition, "trainable_token_indices",
                   [](FakeAdapter& a) {
                     a.config["trainable_token_indices"] = {7, 2048};
                     a.Add("base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta", {2, 256}, 9);
                   },
                   nullptr, nullptr});
  cases.push_back({"NaN in lora_A", C::kInvalidArgument, "holds NaN at index 7", [](FakeAdapter& a) {
                     testing::SetElement(*a.Find(LoraKey(1, "self_attn.q_proj", "lora_A.weight")), 7, std::nanf(""));
                   }, nullptr, nullptr});
  cases.push_back({"upload +Inf in lora_B", C::kInvalidArgument, "holds +Inf at index 3",
                   [](FakeAdapter& a) {
                     testing::SetElement(*a.Find(LoraKey(3, "self_attn.v_proj", "lora_B.weight")), 3, INFINITY);
                   },
                   nullptr, [](std::map<std::string, std::string>&) {}});
  cases.push_back({"truncated safetensors", C::kInvalidArgument, "past the end", nullptr,
                   [](const std::string& dir) {
                     const fs::path w = fs::path(dir) / kWeightsFile;
                     fs::resize_file(w, fs::file_size(w) - 1000);
                   },
                   nullptr});
  cases.push_back({"pickle only", C::kInvalidArgument, "safetensors", nullptr,
                   [](const std::string& dir) {
                     fs::remove(fs::path(dir) / kWeightsFile);
                     std::ofstream(fs::path(dir) / "adapter_model.bin") << "pickle";
                   },
                   nullptr});
  cases.push_back({"missing adapter_config.json", C::kInvalidArgument, kConfigFile, nullptr,
                   [](const std::string& dir) { fs::remove(fs::path(dir) / kConfigFile); }, nullptr});
  cases.push_back({"missing directory", C::kNotFound, "not a directory", nullptr,
                   [](const std::string& dir) { fs::remove_all(dir); }, nullptr});
  cases.push_back({"upload unexpected file", C::kInvalidArgument, "unexpected file 'notes.txt'", nullptr, nullptr,
                   [](std::map<std::string, std::string>& f) { f["notes.txt"] = "hi"; }});
  cases.push_back({"upload missing weights", C::kInvalidArgument, kWeightsFile, nullptr, nullptr,
                   [](std::map<std::string, std::string>& f) { f.erase(kWeightsFile); }});
  cases.push_back({"upload truncated", C::kInvalidArgument, "past the end", nullptr, nullptr,
                   [](std::map<std::string, std::string>& f) {
                     std::string& w = f[kWeightsFile];
                     w.resize(w.size() - 1000);
                   }});
  return cases;
}

TEST_F(AdapterRegistryTest, FailedLoadsLeaveTheRegistryUnchanged) {
  ASSERT_TRUE(Load("good", PathSource{qv_dir()}).ok());
  absl::StatusOr<std::shared_ptr<const Adapter>> good = reg().Lookup("good");
  ASSERT_TRUE(good.ok());
  const std::vector<std::string> listed = Snapshot(reg().List());
  ASSERT_EQ(listed.size(), 1u);

  int i = 0;
  for (const BadCase& c : BadCases()) {
    SCOPED_TRACE(c.name);
    FakeAdapter a = QvLora(1000 + i);
    if (c.edit) c.edit(a);
    AdapterSource source;
    if (c.edit_upload) {
      std::map<std::string, std::string> files = a.Files();
      c.edit_upload(files);
      source = UploadSource{std::move(files)};
    } else {
      const std::string dir = a.Write(absl::StrCat("bad-", i));
      if (c.edit_dir) c.edit_dir(dir);
      source = PathSource{dir};
    }
    const std::string id = absl::StrCat("bad-", i++);
    absl::StatusOr<AdapterInfo> r = Load(id, source);
    EXPECT_TRUE(IsError(r.status(), c.code, {c.substring}));
    EXPECT_EQ(Snapshot(reg().List()), listed);
    EXPECT_TRUE(IsError(reg().Lookup(id).status(), absl::StatusCode::kNotFound, {id}));
    EXPECT_TRUE(IsError(reg().Get(id).status(), absl::StatusCode::kNotFound, {id}));
    EXPECT_TRUE(IsError(reg().Unload(id), absl::StatusCode::kNotFound, {id}));
    EXPECT_EQ(reg().live_bytes(), kQvBytes);
    // The id is free again: the same source fails the same way, not with ALREADY_EXISTS.
    EXPECT_TRUE(IsError(Load(id, source).status(), c.code, {c.substring}));
    // A failed replace of a ready adapter keeps it.
    EXPECT_TRUE(IsError(Load("good", source, /*replace=*/true).status(), c.code, {c.substring}));
    absl::StatusOr<std::shared_ptr<const Adapter>> still = reg().Lookup("good");
    ASSERT_TRUE(still.ok()) << still.status();
    EXPECT_EQ(still->get(), good->get());
  }
  EXPECT_EQ(i, 24);
  EXPECT_EQ(reg().ready_count(), 1);
}

// The case a user hit: an adapter with NaN weights went "ready" and served
// NaN logprobs. Now the load fails, by path and by upload, as a new id and as
// a replacement, and the registry keeps exactly what it had.
TEST_F(AdapterRegistryTest, NonFiniteWeightsAreRefusedAndLeaveTheRegistryUnchanged) {
  ASSERT_TRUE(Load("good", PathSource{qv_dir()}).ok());
  absl::StatusOr<std::shared_ptr<const Adapter>> good = reg().Lookup("good");
  ASSERT_TRUE(good.ok());
  const std::vector<std::string> listed = Snapshot(reg().List());

  FakeAdapter nan = QvLora(77);
  const std::string tensor = LoraKey(1, "self_attn.q_proj", "lora_B.weight");
  testing::SetElement(*nan.Find(tensor), 5, std::nanf(""));
  const std::string dir = nan.Write("nan-lora");
  const std::vector<std::pair<AdapterSource, std::string>> sources = {
      {PathSource{dir}, absl::StrCat(dir, "/", kWeightsFile)},
      {UploadSource{nan.Files()}, absl::StrCat("upload:", kWeightsFile)}};
  for (const auto& [source, file] : sources) {
    SCOPED_TRACE(file);
    for (const auto& [id, replace] : {std::pair{"nan", false}, std::pair{"good", true}}) {
      EXPECT_TRUE(IsError(Load(id, source, replace).status(), absl::StatusCode::kInvalidArgument,
                          {absl::StrCat(file, ": tensor '", tensor, "' holds NaN at index 5")}));
      EXPECT_EQ(Snapshot(reg().List()), listed);
      EXPECT_TRUE(IsError(reg().Lookup("nan").status(), absl::StatusCode::kNotFound, {"nan"}));
      EXPECT_TRUE(IsError(reg().Get("nan").status(), absl::StatusCode::kNotFound, {"nan"}));
      absl::StatusOr<std::shared_ptr<const Adapter>> still = reg().Lookup("good");
      ASSERT_TRUE(still.ok()) << still.status();
      EXPECT_EQ(still->get(), good->get());
      EXPECT_EQ(reg().live_bytes(), kQvBytes);
      EXPECT_EQ(reg().ready_count(), 1);
    }
  }
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
