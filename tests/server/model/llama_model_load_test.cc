// Checkpoint and LlamaModel::Load: success on the demo checkpoint, and
// specific errors for corrupted copies of it (sharded checkpoints:
// llama_model_sharded_test.cc).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/checkpoint.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/linear.h"
#include "server/model/kv_cache.h"
#include "server/model/llama_model.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"
#include "tests/support/llama_model_load_fixture.h"
#include "tests/support/test_env.h"

namespace adapterd::model {
namespace {

// The bytes of the copies --prepack_weights keeps of a model in `dtype`:
// every projection and the LM head, where that dtype is packed here.
int64_t PackedBytes(const ModelConfig& c, at::ScalarType dtype = at::kFloat) {
  if (!PacksWeights(dtype)) return 0;
  const int64_t H = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  return c10::elementSize(dtype) *
         (c.num_layers * (H * (q + 2 * kv) + q * H + 3 * c.intermediate_size * H) + c.vocab_size * H);
}

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::AnyOf;
using ::testing::HasSubstr;

constexpr char kUpProj1[] = "model.layers.1.mlp.up_proj.weight";

class LlamaModelLoadTest : public LlamaModelLoadFixture {};



// ------------------------------------------------------------- success -----

TEST_F(LlamaModelLoadTest, LoadsDemoCheckpoint) {
  absl::StatusOr<std::unique_ptr<LlamaModel>> m = LlamaModel::Load(demo(), {});
  ASSERT_TRUE(m.ok()) << m.status();
  const ModelConfig& c = (*m)->config();
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.vocab_size, 2048);
  EXPECT_EQ(c.num_layers, 4);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.intermediate_size, 688);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ((*m)->options().dtype, at::kFloat);
  EXPECT_TRUE((*m)->options().device.is_cpu());
  EXPECT_GT((*m)->weight_bytes(), 0);
  // Every weight is float32 and none is tied, so the bytes are 4 per
  // parameter, and 4 per element of the packed copies.
  EXPECT_EQ((*m)->weight_bytes(), c.NumParameters() * 4 + PackedBytes(c));

  absl::StatusOr<at::Tensor> logits = Logits(**m, Prompt());
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->dim(), 2);
  EXPECT_EQ(logits->size(0), 1);
  EXPECT_EQ(logits->size(1), 2048);
  EXPECT_EQ(logits->scalar_type(), at::kFloat);
  EXPECT_TRUE(logits->isfinite().all().item<bool>());
  EXPECT_GT(logits->abs().max().item<float>(), 0.0f);
}

TEST_F(LlamaModelLoadTest, NumParametersMatchesCheckpointTensors) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromDirectory(demo());
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      SafetensorsFile::Open((fs::path(demo()) / "model.safetensors").string());
  ASSERT_TRUE(f.ok()) << f.status();
  int64_t total = 0;
  for (const StTensorInfo& t : (*f)->tensors()) total += t.numel();
  EXPECT_EQ(c->NumParameters(), total);
  EXPECT_EQ((*f)->tensors().size(), 2u + 4u * 9u + 1u);
}

TEST_F(LlamaModelLoadTest, LoadsTwiceFromTheSameMapping) {
  absl::StatusOr<std::unique_ptr<LlamaModel>> a = LlamaModel::Load(demo(), {});
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<std::unique_ptr<LlamaModel>> b = LlamaModel::Load(demo(), {});
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<at::Tensor> la = Logits(**a, Prompt());
  absl::StatusOr<at::Tensor> lb = Logits(**b, Prompt());
  ASSERT_TRUE(la.ok()) << la.status();
  ASSERT_TRUE(lb.ok()) << lb.status();
  EXPECT_TRUE(at::equal(*la, *lb));
  // The first model still works after the second mapped the same file.
  b->reset();
  absl::StatusOr<at::Tensor> again = Logits(**a, Prompt());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(at::equal(*la, *again));
}

TEST_F(LlamaModelLoadTest, Bf16OptionHalvesWeightBytes) {
  ModelOptions opts;
  opts.dtype = at::kBFloat16;
  absl::StatusOr<std::unique_ptr<LlamaModel>> m = LlamaModel::Load(demo(), opts);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->weight_bytes(), (*m)->config().NumParameters() * 2 + PackedBytes((*m)->config(), at::kBFloat16));
}

TEST_F(LlamaModelLoadTest, CheckpointF32GetAliasesTheMapping) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(demo());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->total_bytes(), fs::file_size(fs::path(demo()) / "model.safetensors"));
  EXPECT_TRUE((*ckpt)->Has(kUpProj1));
  EXPECT_FALSE((*ckpt)->Has("model.layers.4.mlp.up_proj.weight"));

  absl::StatusOr<at::Tensor> a = (*ckpt)->Get(kUpProj1, {688, 256}, at::kFloat, at::kCPU);
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<at::Tensor> b = (*ckpt)->Get(kUpProj1, {688, 256}, at::kFloat, at::kCPU);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->data_ptr(), b->data_ptr()) << "F32 weights should alias the mapped file";
  EXPECT_EQ(a->sizes().vec(), (std::vector<int64_t>{688, 256}));

  // The values are the file's bytes.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      SafetensorsFile::Open((fs::path(demo()) / "model.safetensors").string());
  ASSERT_TRUE(f.ok()) << f.status();
  const StTensorInfo* info = (*f)->Find(kUpProj1);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(Bytes(*a), Bytes((*f)->Data(*info)));

  // A converted tensor is a copy.
  absl::StatusOr<at::Tensor> c = (*ckpt)->Get(kUpProj1, {688, 256}, at::kBFloat16, at::kCPU);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->scalar_type(), at::kBFloat16);
  EXPECT_NE(c->data_ptr(), a->data_ptr());

  std::vector<std::string> unused = (*ckpt)->UnusedNames();
  EXPECT_EQ(unused.size(), 38u);
  EXPECT_EQ(std::count(unused.begin(), unused.end(), std::string(kUpProj1)), 0);
}

TEST_F(LlamaModelLoadTest, ReleasedPagesReadTheFileAgain) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(demo());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<at::Tensor> a = (*ckpt)->Get(kUpProj1, {688, 256}, at::kFloat, at::kCPU);
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string before(Bytes(*a));
  (*ckpt)->Release(kUpProj1);
  (*ckpt)->Release("no.such.tensor");
  EXPECT_EQ(Bytes(*a), before) << "an alias of released pages must still read the file's bytes";
}

TEST_F(LlamaModelLoadTest, FusedProjectionsAreTheFilesWeights) {
  absl::StatusOr<std::unique_ptr<LlamaModel>> m = LlamaModel::Load(demo(), {});
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      SafetensorsFile::Open((fs::path(demo()) / "model.safetensors").string());
  ASSERT_TRUE(f.ok()) << f.status();
  for (int64_t layer = 0; layer < (*m)->config().num_layers; ++layer) {
    for (int p = 0; p < kNumProj; ++p) {
      const std::string name =
          absl::StrCat("model.layers.", layer, ".") + std::string(ProjPath(static_cast<Proj>(p))) + ".weight";
      const StTensorInfo* info = (*f)->Find(name);
      ASSERT_NE(info, nullptr) << name;
      const at::Tensor& w = (*m)->ProjWeight(layer, static_cast<Proj>(p));
      EXPECT_TRUE(w.is_contiguous()) << name;
      EXPECT_EQ(w.sizes().vec(), info->shape) << name;
      EXPECT_EQ(Bytes(w), Bytes((*f)->Data(*info))) << name;
    }
  }
}

// ------------------------------------------------------ missing tensor -----

TEST_F(LlamaModelLoadTest, MissingTensor) {
  const std::string dir = CopyOfDemo("missing-tensor");
  ASSERT_TRUE(RewriteWeights(dir, [](const StTensorInfo& t, std::string_view, StTensorToWrite&,
                                     std::vector<at::Tensor>&) { return t.name != kUpProj1; })
                  .ok());
  absl::Status s = LlamaModel::Load(dir, {}).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  const std::string msg(s.message());
  EXPECT_THAT(msg, HasSubstr((fs::path(dir) / "model.safetensors").string()));
  EXPECT_THAT(msg, HasSubstr(kUpProj1));
  EXPECT_THAT(msg, HasSubstr("missing"));
  EXPECT_THAT(msg, HasSubstr("[688, 256]"));
}

// -------------------------------------------------------- wrong shape ------

TEST_F(LlamaModelLoadTest, WrongShape) {
  const std::string dir = CopyOfDemo("wrong-shape");
  ASSERT_TRUE(RewriteWeights(dir,
                             [](const StTensorInfo& t, std::string_view, StTensorToWrite& w,
                                std::vector<at::Tensor>& keep) {
                               if (t.name == kUpProj1) {
                                 keep.push_back(at::zeros({688, 128}, at::kFloat));
                                 w.shape = {688, 128};
                                 w.bytes = Bytes(keep.back());
                               }
                               return true;
                             })
                  .ok());
  absl::Status s = LlamaModel::Load(dir, {}).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  const std::string msg(s.message());
  EXPECT_THAT(msg, HasSubstr((fs::path(dir) / "model.safetensors").string()));
  EXPECT_THAT(msg, HasSubstr(kUpProj1));
  EXPECT_THAT(msg, HasSubstr("[688, 128]"));  // actual
  EXPECT_THAT(msg, HasSubstr("[688, 256]"));  // expected
}

// ----------------------------------------------------- truncated file ------

TEST_F(LlamaModelLoadTest, TruncatedSafetensors) {
  const std::string dir = CopyOfDemo("truncated");
  const fs::path file = fs::path(dir) / "model.safetensors";
  const auto size = fs::file_size(file);
  fs::resize_file(file, size / 2);
  ASSERT_EQ(fs::file_size(file), size / 2);
  absl::Status s = LlamaModel::Load(dir, {}).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(file.string()));
}

TEST_F(LlamaModelLoadTest, TruncatedIntoTheHeader) {
  const std::string dir = CopyOfDemo("truncated-header");
  const fs::path file = fs::path(dir) / "model.safetensors";
  fs::resize_file(file, 100);
  absl::Status s = Checkpoint::Open(dir).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(file.string()));
}

// ---------------------------------------------------- pickled weights ------

TEST_F(LlamaModelLoadTest, OnlyPytorchModelBin) {
  const std::string dir = testing::MakeTempDir("pickled");
  fs::copy_file(fs::path(demo()) / "config.json", fs::path(dir) / "config.json");
  WriteAll(fs::path(dir) / "pytorch_model.bin", "PK\x03\x04 not really a zip");
  for (absl::Status s : {LlamaModel::Load(dir, {}).status(), Checkpoint::Open(dir).status()}) {
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    const std::string msg(s.message());
    EXPECT_THAT(msg, HasSubstr("pytorch_model.bin"));
    EXPECT_THAT(msg, HasSubstr("pickled"));
    EXPECT_THAT(msg, HasSubstr("safetensors"));
    EXPECT_THAT(msg, HasSubstr(dir));
  }
}

TEST_F(LlamaModelLoadTest, ConfigButNoWeights) {
  const std::string dir = testing::MakeTempDir("no-weights");
  fs::copy_file(fs::path(demo()) / "config.json", fs::path(dir) / "config.json");
  absl::Status s = LlamaModel::Load(dir, {}).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors"));
  EXPECT_THAT(std::string(s.message()), HasSubstr(dir));
}

// ---------------------------------------------------------- config.json ----

TEST_F(LlamaModelLoadTest, EmptyDirectory) {
  const std::string dir = testing::MakeTempDir("empty");
  absl::Status s = LlamaModel::Load(dir, {}).status();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.code(), AnyOf(absl::StatusCode::kNotFound, absl::StatusCode::kInvalidArgument))
      << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr((fs::path(dir) / "config.json").string()));
}

TEST_F(LlamaModelLoadTest, BadConfigJson) {
  const std::string dir = CopyOfDemo("bad-config");
  const fs::path config = fs::path(dir) / "config.json";
  WriteAll(config, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": ");
  absl::Status s = LlamaModel::Load(dir, {}).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(config.string()));
  EXPECT_THAT(std::string(s.message()), HasSubstr("JSON"));
}

TEST_F(LlamaModelLoadTest, ConfigDisagreesWithWeights) {
  const std::string dir = CopyOfDemo("config-mismatch");
  json j = json::parse(ReadAll(fs::path(demo()) / "config.json"));
  j["intermediate_size"] = 512;
  WriteAll(fs::path(dir) / "config.json", j.dump(2));
  absl::Status s = LlamaModel::Load(dir, {}).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("mlp.gate_proj.weight"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("[688, 256]"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("[512, 256]"));
}

TEST_F(LlamaModelLoadTest, UnsupportedDtype) {
  const std::string dir = CopyOfDemo("i32-weight");
  ASSERT_TRUE(RewriteWeights(dir,
                             [](const StTensorInfo& t, std::string_view, StTensorToWrite& w,
                                std::vector<at::Tensor>& keep) {
                               if (t.name == kUpProj1) {
                                 keep.push_back(at::zeros({688, 256}, at::kInt));
                                 w.dtype = StDType::kI32;
                                 w.bytes = Bytes(keep.back());
                               }
                               return true;
                             })
                  .ok());
  absl::Status s = LlamaModel::Load(dir, {}).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  const std::string msg(s.message());
  EXPECT_THAT(msg, HasSubstr((fs::path(dir) / "model.safetensors").string()));
  EXPECT_THAT(msg, HasSubstr(kUpProj1));
  EXPECT_THAT(msg, HasSubstr("I32"));
}

// ---------------------------------------------------- non-finite weights ----

// A base weight holding NaN or an infinity fails start-up, naming the file,
// the tensor and the first bad index, in F32 and in BF16 checkpoints.
TEST_F(LlamaModelLoadTest, NonFiniteWeightFailsLoad) {
  struct Case {
    bool bf16;
    float value;
    const char* word;
  };
  int i = 0;
  for (const Case& c : {Case{false, std::nanf(""), "NaN"}, Case{false, -INFINITY, "-Inf"},
                        Case{true, std::nanf(""), "NaN"}, Case{true, INFINITY, "+Inf"}}) {
    SCOPED_TRACE(absl::StrCat(c.bf16 ? "BF16 " : "F32 ", c.word));
    const std::string dir = CopyOfDemo(absl::StrCat("non-finite-", i++));
    ASSERT_TRUE(RewriteWeights(dir,
                               [&c](const StTensorInfo& t, std::string_view bytes, StTensorToWrite& w,
                                    std::vector<at::Tensor>& keep) {
                                 at::Tensor v =
                                     at::from_blob(const_cast<char*>(bytes.data()), t.shape, at::kFloat).clone();
                                 if (t.name == kUpProj1) {
                                   v.view({-1})[70000] = -INFINITY;  // a later one is not the one reported
                                   v.view({-1})[1234] = c.value;
                                 }
                                 keep.push_back(c.bf16 ? v.to(at::kBFloat16).contiguous() : v);
                                 w.dtype = c.bf16 ? StDType::kBF16 : StDType::kF32;
                                 w.bytes = Bytes(keep.back());
                                 return true;
                               })
                    .ok());
    absl::Status s = LlamaModel::Load(dir, {}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(s.message(), absl::StrCat((fs::path(dir) / "model.safetensors").string(), ": tensor '", kUpProj1,
                                        "' holds ", c.word, " at index 1234"));
  }
}

// ------------------------------------------------------------ bf16 file ----

TEST_F(LlamaModelLoadTest, Bf16CheckpointLoadsAsFloat32) {
  const std::string dir = CopyOfDemo("bf16");
  ASSERT_TRUE(RewriteWeights(dir,
                             [](const StTensorInfo& t, std::string_view bytes, StTensorToWrite& w,
                                std::vector<at::Tensor>& keep) {
                               at::Tensor f32 = at::from_blob(const_cast<char*>(bytes.data()),
                                                              t.shape, at::kFloat);
                               keep.push_back(f32.to(at::kBFloat16).contiguous());
                               w.dtype = StDType::kBF16;
                               w.bytes = Bytes(keep.back());
                               return true;
                             })
                  .ok());
  {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
        SafetensorsFile::Open((fs::path(dir) / "model.safetensors").string());
    ASSERT_TRUE(f.ok()) << f.status();
    for (const StTensorInfo& t : (*f)->tensors()) {
      ASSERT_EQ(t.dtype, StDType::kBF16) << t.name;
    }
  }

  absl::StatusOr<std::unique_ptr<LlamaModel>> bf16 = LlamaModel::Load(dir, {});
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ((*bf16)->options().dtype, at::kFloat);
  // Converted to float32 on load: 4 bytes per parameter (and packed).
  EXPECT_EQ((*bf16)->weight_bytes(), (*bf16)->config().NumParameters() * 4 + PackedBytes((*bf16)->config()));
  absl::StatusOr<std::unique_ptr<LlamaModel>> f32 = LlamaModel::Load(demo(), {});
  ASSERT_TRUE(f32.ok()) << f32.status();

  absl::StatusOr<at::Tensor> lb = Logits(**bf16, Prompt());
  absl::StatusOr<at::Tensor> lf = Logits(**f32, Prompt());
  ASSERT_TRUE(lb.ok()) << lb.status();
  ASSERT_TRUE(lf.ok()) << lf.status();
  ASSERT_EQ(lb->sizes(), lf->sizes());
  EXPECT_EQ(lb->scalar_type(), at::kFloat);
  const float diff = (*lb - *lf).abs().max().item<float>();
  EXPECT_LT(diff, 0.1f);
  EXPECT_GT(diff, 0.0f) << "bf16 rounding should change the logits a little";
  // Same next-token prediction.
  EXPECT_EQ(lb->argmax(-1).item<int64_t>(), lf->argmax(-1).item<int64_t>());
}

}  // namespace
}  // namespace adapterd::model
