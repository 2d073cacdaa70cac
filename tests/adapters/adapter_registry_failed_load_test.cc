// AdapterRegistry loads that fail (bad files and configs, by path and by
// upload, non-finite weights) leave the registry as it was.
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

namespace fs = std::filesystem;
using model::StDType;

using testing::FakeAdapter;
using testing::IsError;
using testing::LoraKey;
using testing::QvLora;
using registry_test::AdapterRegistryTest;
using registry_test::kQvBytes;
using registry_test::Snapshot;

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
}  // namespace
}  // namespace adapterd::adapters
