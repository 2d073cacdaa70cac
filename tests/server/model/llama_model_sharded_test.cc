// LlamaModel::Load on sharded checkpoints (model.safetensors.index.json and
// its shards) written from the demo checkpoint: the same logits as the
// single file, and specific errors for indexes that name the wrong shard, a
// missing tensor or shard, a path outside the directory, or bad JSON.
#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/checkpoint.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"
#include "tests/support/llama_model_load_fixture.h"
#include "tests/support/test_env.h"

namespace adapterd::model {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

class ShardedTest : public LlamaModelLoadFixture {
 protected:
  // Writes the demo tensors into two shards: layers 0-1 plus embeddings go to
  // shard 1, everything else to shard 2. `shard_of` in the index can be
  // overridden per tensor.
  static absl::Status WriteShards(const std::string& dir,
                                  const std::map<std::string, std::string>& index_override = {}) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> src =
        SafetensorsFile::Open((fs::path(demo()) / "model.safetensors").string());
    if (!src.ok()) return src.status();
    const std::string s1 = "model-00001-of-00002.safetensors";
    const std::string s2 = "model-00002-of-00002.safetensors";
    std::vector<StTensorToWrite> a, b;
    json map = json::object();
    for (const StTensorInfo& t : (*src)->tensors()) {
      StTensorToWrite w{t.name, t.dtype, t.shape, Bytes((*src)->Data(t))};
      const bool first = t.name.starts_with("model.embed_tokens") ||
                         t.name.starts_with("model.layers.0.") ||
                         t.name.starts_with("model.layers.1.");
      (first ? a : b).push_back(w);
      map[t.name] = first ? s1 : s2;
    }
    for (const auto& [name, shard] : index_override) map[name] = shard;
    if (absl::Status s = WriteSafetensors((fs::path(dir) / s1).string(), a, {{"format", "pt"}});
        !s.ok()) {
      return s;
    }
    if (absl::Status s = WriteSafetensors((fs::path(dir) / s2).string(), b, {{"format", "pt"}});
        !s.ok()) {
      return s;
    }
    json index = {{"metadata", {{"total_size", (*src)->size_bytes()}}}, {"weight_map", map}};
    WriteAll(fs::path(dir) / "model.safetensors.index.json", index.dump(2));
    fs::copy_file(fs::path(demo()) / "config.json", fs::path(dir) / "config.json");
    fs::copy_file(fs::path(demo()) / "generation_config.json",
                  fs::path(dir) / "generation_config.json");
    return absl::OkStatus();
  }
};

TEST_F(ShardedTest, LoadsAndMatchesUnsharded) {
  const std::string dir = testing::MakeTempDir("sharded");
  ASSERT_TRUE(WriteShards(dir).ok());
  ASSERT_FALSE(fs::exists(fs::path(dir) / "model.safetensors"));

  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE((*ckpt)->Has("model.embed_tokens.weight"));
  EXPECT_TRUE((*ckpt)->Has("lm_head.weight"));
  EXPECT_EQ((*ckpt)->UnusedNames().size(), 39u);

  absl::StatusOr<std::unique_ptr<LlamaModel>> sharded = LlamaModel::Load(dir, {});
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  absl::StatusOr<std::unique_ptr<LlamaModel>> single = LlamaModel::Load(demo(), {});
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ((*sharded)->weight_bytes(), (*single)->weight_bytes());

  absl::StatusOr<at::Tensor> ls = Logits(**sharded, Prompt());
  absl::StatusOr<at::Tensor> lu = Logits(**single, Prompt());
  ASSERT_TRUE(ls.ok()) << ls.status();
  ASSERT_TRUE(lu.ok()) << lu.status();
  ASSERT_EQ(ls->sizes(), lu->sizes());
  EXPECT_LE((*ls - *lu).abs().max().item<float>(), 1e-6f);
}

TEST_F(ShardedTest, IndexNamesWrongShard) {
  const std::string dir = testing::MakeTempDir("sharded-wrong");
  // lm_head.weight lives in shard 2, but the index says shard 1.
  ASSERT_TRUE(
      WriteShards(dir, {{"lm_head.weight", "model-00001-of-00002.safetensors"}}).ok());
  absl::Status s = LlamaModel::Load(dir, {}).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  const std::string msg(s.message());
  EXPECT_THAT(msg, HasSubstr("model.safetensors.index.json"));
  EXPECT_THAT(msg, HasSubstr("lm_head.weight"));
  EXPECT_THAT(msg, HasSubstr("model-00001-of-00002.safetensors"));
}

TEST_F(ShardedTest, IndexNamesMissingTensor) {
  const std::string dir = testing::MakeTempDir("sharded-ghost");
  ASSERT_TRUE(WriteShards(dir, {{"model.layers.9.mlp.up_proj.weight",
                                 "model-00002-of-00002.safetensors"}})
                  .ok());
  absl::Status s = Checkpoint::Open(dir).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.layers.9.mlp.up_proj.weight"));
}

TEST_F(ShardedTest, IndexNamesMissingShardFile) {
  const std::string dir = testing::MakeTempDir("sharded-no-file");
  ASSERT_TRUE(WriteShards(dir).ok());
  const fs::path shard2 = fs::path(dir) / "model-00002-of-00002.safetensors";
  fs::remove(shard2);
  absl::Status s = LlamaModel::Load(dir, {}).status();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(shard2.string()));
}

TEST_F(ShardedTest, ShardPathEscapeRejected) {
  const std::string dir = testing::MakeTempDir("sharded-escape");
  ASSERT_TRUE(
      WriteShards(dir, {{"lm_head.weight", "../model-00002-of-00002.safetensors"}}).ok());
  absl::Status s = Checkpoint::Open(dir).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("../model-00002-of-00002.safetensors"));
}

TEST_F(ShardedTest, BadIndexJson) {
  const std::string dir = testing::MakeTempDir("sharded-bad-index");
  ASSERT_TRUE(WriteShards(dir).ok());
  WriteAll(fs::path(dir) / "model.safetensors.index.json", R"({"metadata": {}})");
  absl::Status s = Checkpoint::Open(dir).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors.index.json"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("weight_map"));
}

// ------------------------------------------------------ unsupported dtype --

}  // namespace
}  // namespace adapterd::model
