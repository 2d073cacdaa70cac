// ReadAdapterDirectory / AdapterFilesFromUpload / LoadLora against the demo
// base model: PEFT-layout adapters written here in C++ load into the right
// per-layer modules and change the logits; malformed or mismatched adapters
// fail with the status code and a message naming the tensor, key or file.
#include "adapters/kind_loaders.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/demo_model.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"

namespace adapterd::adapters {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using model::Proj;
using model::StDType;
using ::testing::ElementsAre;

using testing::FakeAdapter;
using testing::FakeTensor;
using testing::IsError;
using testing::LoraKey;
using testing::MaxDiff;
using testing::PeftLoraConfig;
using testing::QvLora;

constexpr int64_t kLayers = 4;

// ------------------------------------------------------------- helpers -----

// [out, in] of each projection of the demo model.
std::pair<int64_t, int64_t> Dims(const std::string& path) {
  return testing::ProjDims(testing::DemoModelConfig(), path);
}

std::string TensorBytes(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

at::Tensor FromF32(const std::string& bytes, const std::vector<int64_t>& shape) {
  return at::from_blob(const_cast<char*>(bytes.data()), shape, at::kFloat).clone();
}

class LoraLoaderTest : public testing::DemoModelTest {
 protected:
  // Loads through a directory (the path the server uses for PathSource).
  static absl::StatusOr<LoadedAdapter> LoadDir(const FakeAdapter& a, const std::string& name = "adapter") {
    const std::string dir = a.Write(name);
    absl::StatusOr<AdapterFiles> files = ReadAdapterDirectory(dir);
    if (!files.ok()) return files.status();
    return LoadLora(*files, base());
  }
  static absl::StatusOr<LoadedAdapter> LoadUpload(const FakeAdapter& a) {
    absl::StatusOr<AdapterFiles> files = AdapterFilesFromUpload(a.Files());
    if (!files.ok()) return files.status();
    return LoadLora(*files, base());
  }

  // Last-token logits [1, vocab] of a fixed prompt through the base with `adapter` (null = base).
  static at::Tensor Logits(const model::AdapterWeights* adapter) { return testing::PromptLogits(base(), adapter); }
};

// ------------------------------------------------------------- success -----

TEST_F(LoraLoaderTest, DemoProjectionShapesAreTheOnesTheseTestsAssume) {
  const char* paths[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  for (int p = 0; p < model::kNumProj; ++p) {
    ASSERT_EQ(std::string(model::ProjPath(static_cast<Proj>(p))), paths[p]);
    const at::Tensor& w = base().ProjWeight(0, static_cast<Proj>(p));
    EXPECT_EQ(w.size(0), Dims(paths[p]).first) << paths[p];
    EXPECT_EQ(w.size(1), Dims(paths[p]).second) << paths[p];
  }
  EXPECT_EQ(base().config().num_layers, kLayers);
}

TEST_F(LoraLoaderTest, LoadsQvAdapterFromDirectory) {
  const FakeAdapter a = QvLora();
  absl::StatusOr<LoadedAdapter> lora = LoadDir(a, "qv");
  ASSERT_TRUE(lora.ok()) << lora.status();
  const model::AdapterWeights& w = *lora->weights;
  ASSERT_EQ(w.num_layers(), kLayers);
  for (int64_t l = 0; l < kLayers; ++l) {
    for (Proj p : {Proj::kQ, Proj::kV}) {
      const model::LoraModule* m = w.Find(l, p);
      ASSERT_NE(m, nullptr) << "layer " << l << " " << model::ProjName(p);
      EXPECT_EQ(m->rank(), 4);
      EXPECT_DOUBLE_EQ(m->scale, 8.0 / 4.0);
      EXPECT_FALSE(m->dora_scale.defined());
      EXPECT_EQ(m->a.scalar_type(), at::kFloat);
      EXPECT_EQ(m->a.device(), base().options().device);
      const int64_t out = p == Proj::kQ ? 256 : 128;
      EXPECT_THAT(m->a.sizes().vec(), ElementsAre(4, 256));
      EXPECT_THAT(m->b.sizes().vec(), ElementsAre(out, 4));
    }
    for (Proj p : {Proj::kK, Proj::kO, Proj::kGate, Proj::kUp, Proj::kDown}) {
      EXPECT_EQ(w.Find(l, p), nullptr) << "layer " << l << " " << model::ProjName(p);
    }
  }
  // The values are the file's, in their places.
  const std::string a1 = LoraKey(1, "self_attn.v_proj", "lora_A.weight");
  const std::string b3 = LoraKey(3, "self_attn.q_proj", "lora_B.weight");
  ASSERT_NE(a.Find(a1), nullptr);
  ASSERT_NE(a.Find(b3), nullptr);
  EXPECT_TRUE(at::equal(w.Find(1, Proj::kV)->a, FromF32(a.Find(a1)->bytes, {4, 256})));
  EXPECT_TRUE(at::equal(w.Find(3, Proj::kQ)->b, FromF32(a.Find(b3)->bytes, {256, 4})));

  EXPECT_THAT(lora->summary.ranks, ElementsAre(4));
  EXPECT_THAT(lora->summary.target_modules, ElementsAre("q_proj", "v_proj"));
  EXPECT_EQ(lora->summary.type, "lora");
  // Per layer: q A [4,256] + B [256,4], v A [4,256] + B [128,4], in float32.
  const int64_t per_layer = (4 * 256 + 256 * 4 + 4 * 256 + 128 * 4) * 4;
  EXPECT_EQ(w.bytes(), kLayers * per_layer);
  EXPECT_EQ(w.bytes(), 57344);
}

TEST_F(LoraLoaderTest, UploadLoadsLikeDirectory) {
  const FakeAdapter a = QvLora(7);
  absl::StatusOr<AdapterFiles> files = AdapterFilesFromUpload(a.Files());
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->label, "upload");
  absl::StatusOr<LoadedAdapter> up = LoadLora(*files, base());
  ASSERT_TRUE(up.ok()) << up.status();
  absl::StatusOr<LoadedAdapter> dir = LoadDir(a, "qv-for-upload");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(up->weights->bytes(), dir->weights->bytes());
  for (int64_t l = 0; l < kLayers; ++l) {
    for (Proj p : {Proj::kQ, Proj::kV}) {
      EXPECT_TRUE(at::equal(up->weights->Find(l, p)->a, dir->weights->Find(l, p)->a));
      EXPECT_TRUE(at::equal(up->weights->Find(l, p)->b, dir->weights->Find(l, p)->b));
    }
  }
}

TEST_F(LoraLoaderTest, AdapterChangesLogitsAndZeroBIsTheBase) {
  const at::Tensor base_logits = Logits(nullptr);
  ASSERT_TRUE(base_logits.defined());
  ASSERT_THAT(base_logits.sizes().vec(), ElementsAre(1, 2048));

  absl::StatusOr<LoadedAdapter> lora = LoadDir(QvLora(), "qv-logits");
  ASSERT_TRUE(lora.ok()) << lora.status();
  const at::Tensor with = Logits(lora->weights.get());
  ASSERT_TRUE(with.defined());
  EXPECT_GT(MaxDiff(with, base_logits), 1e-3) << "the adapter did not change the logits";
  // The adapter is read-only: a second run gives the same result.
  EXPECT_LT(MaxDiff(Logits(lora->weights.get()), with), 1e-6);

  // PEFT initialises lora_B to zeros: such an adapter is exactly the base.
  FakeAdapter zero = QvLora();
  for (FakeTensor& t : zero.tensors) {
    if (t.name.find("lora_B") != std::string::npos) t.bytes.assign(t.bytes.size(), '\0');
  }
  absl::StatusOr<LoadedAdapter> zero_lora = LoadDir(zero, "qv-zero-b");
  ASSERT_TRUE(zero_lora.ok()) << zero_lora.status();
  EXPECT_LT(MaxDiff(Logits(zero_lora->weights.get()), base_logits), 1e-6);
}

TEST_F(LoraLoaderTest, AllLinearRankPatternAndRsLora) {
  FakeAdapter a;
  a.config = PeftLoraConfig(4, 16, "all-linear");
  a.config["use_rslora"] = true;
  a.config["rank_pattern"] = {{"layers.1.self_attn.q_proj", 8}};
  a.config["alpha_pattern"] = {{"down_proj", 4}};
  uint32_t seed = 100;
  for (int64_t l = 0; l < kLayers; ++l) {
    for (int p = 0; p < model::kNumProj; ++p) {
      const std::string path(model::ProjPath(static_cast<Proj>(p)));
      const int64_t r = (l == 1 && path == "self_attn.q_proj") ? 8 : 4;
      const auto [out, in] = Dims(path);
      a.Add(LoraKey(l, path, "lora_A.weight"), {r, in}, seed++);
      a.Add(LoraKey(l, path, "lora_B.weight"), {out, r}, seed++);
    }
  }
  absl::StatusOr<LoadedAdapter> lora = LoadUpload(a);
  ASSERT_TRUE(lora.ok()) << lora.status();
  const model::AdapterWeights& w = *lora->weights;
  EXPECT_EQ(w.Find(1, Proj::kQ)->rank(), 8);
  EXPECT_DOUBLE_EQ(w.Find(1, Proj::kQ)->scale, 16.0 / std::sqrt(8.0));
  EXPECT_EQ(w.Find(0, Proj::kQ)->rank(), 4);
  EXPECT_DOUBLE_EQ(w.Find(0, Proj::kQ)->scale, 16.0 / 2.0);
  EXPECT_DOUBLE_EQ(w.Find(2, Proj::kDown)->scale, 4.0 / 2.0);
  EXPECT_THAT(lora->summary.ranks, ElementsAre(4, 8));
  EXPECT_THAT(lora->summary.target_modules,
              ElementsAre("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"));
  EXPECT_GT(MaxDiff(Logits(&w), Logits(nullptr)), 1e-3);
}

TEST_F(LoraLoaderTest, LayersToTransformLoadsOnlyThoseLayers) {
  FakeAdapter a;
  a.config = PeftLoraConfig(2, 4, json::array({"o_proj"}));
  a.config["layers_to_transform"] = {2};
  a.Add(LoraKey(2, "self_attn.o_proj", "lora_A.weight"), {2, 256}, 5);
  a.Add(LoraKey(2, "self_attn.o_proj", "lora_B.weight"), {256, 2}, 6);
  absl::StatusOr<LoadedAdapter> lora = LoadDir(a, "layer2");
  ASSERT_TRUE(lora.ok()) << lora.status();
  EXPECT_NE(lora->weights->Find(2, Proj::kO), nullptr);
  EXPECT_EQ(lora->weights->Find(0, Proj::kO), nullptr);
  EXPECT_EQ(lora->weights->Find(1, Proj::kO), nullptr);
  EXPECT_EQ(lora->weights->Find(3, Proj::kO), nullptr);
  EXPECT_EQ(lora->weights->bytes(), (2 * 256 + 256 * 2) * 4);
}

// On a fp32 CPU base, F16 and BF16 deltas keep their dtype (half the bytes)
// and give the logits of the same values widened to F32.
TEST_F(LoraLoaderTest, HalfPrecisionTensorsKeepTheirDtypeAndGiveTheWidenedResult) {
  for (const auto& [st, at_type] : {std::pair{StDType::kF16, at::kHalf}, std::pair{StDType::kBF16, at::kBFloat16}}) {
    SCOPED_TRACE(model::StDTypeName(st));
    FakeAdapter half = QvLora(), widened = QvLora();
    for (size_t i = 0; i < half.tensors.size(); ++i) {
      FakeTensor& t = half.tensors[i];
      const at::Tensor h = FromF32(t.bytes, t.shape).to(at_type);
      t.bytes = TensorBytes(h);
      t.dtype = st;
      widened.tensors[i].bytes = TensorBytes(h.to(at::kFloat));
    }
    absl::StatusOr<LoadedAdapter> lora = LoadDir(half, "half");
    ASSERT_TRUE(lora.ok()) << lora.status();
    absl::StatusOr<LoadedAdapter> wide = LoadDir(widened, "widened");
    ASSERT_TRUE(wide.ok()) << wide.status();
    EXPECT_EQ(lora->weights->Find(0, Proj::kQ)->a.scalar_type(), at_type);
    EXPECT_EQ(lora->weights->Find(3, Proj::kV)->b.scalar_type(), at_type);
    EXPECT_EQ(wide->weights->bytes(), 57344);
    EXPECT_EQ(lora->weights->bytes(), 57344 / 2);
    const at::Tensor logits = Logits(lora->weights.get());
    EXPECT_GT(MaxDiff(logits, Logits(nullptr)), 1e-3);
    EXPECT_LT(MaxDiff(logits, Logits(wide->weights.get())), 1e-5);
  }
}

// A DoRA adapter whose magnitudes equal ||W + scale B A|| row norms scales
// nothing, so it gives the plain LoRA result; other magnitudes do not.
TEST_F(LoraLoaderTest, DoraMagnitudesRescaleOutputs) {
  const FakeAdapter plain = QvLora(11);
  FakeAdapter dora = plain;
  dora.config["use_dora"] = true;
  FakeAdapter dora2 = dora;
  const double scale = 8.0 / 4.0;
  for (int64_t l = 0; l < kLayers; ++l) {
    for (Proj p : {Proj::kQ, Proj::kV}) {
      const std::string path(model::ProjPath(p));
      const int64_t out = Dims(path).first;
      at::Tensor A = FromF32(dora.Find(LoraKey(l, path, "lora_A.weight"))->bytes, {4, 256});
      at::Tensor B = FromF32(dora.Find(LoraKey(l, path, "lora_B.weight"))->bytes, {out, 4});
      at::Tensor norm = (base().ProjWeight(l, p).to(at::kFloat) + scale * at::mm(B, A)).norm(2, {1});
      dora.tensors.push_back({LoraKey(l, path, "lora_magnitude_vector"), StDType::kF32, {out}, TensorBytes(norm)});
      dora2.tensors.push_back({LoraKey(l, path, "lora_magnitude_vector"), StDType::kF32, {out},
                               TensorBytes(norm * 1.5)});
    }
  }
  absl::StatusOr<LoadedAdapter> lp = LoadDir(plain, "dora-plain");
  absl::StatusOr<LoadedAdapter> ld = LoadDir(dora, "dora");
  absl::StatusOr<LoadedAdapter> ld2 = LoadUpload(dora2);
  ASSERT_TRUE(lp.ok()) << lp.status();
  ASSERT_TRUE(ld.ok()) << ld.status();
  ASSERT_TRUE(ld2.ok()) << ld2.status();
  EXPECT_EQ(ld->summary.type, "dora");
  const model::LoraModule* m = ld->weights->Find(2, Proj::kV);
  ASSERT_NE(m, nullptr);
  ASSERT_TRUE(m->dora_scale.defined());
  EXPECT_THAT(m->dora_scale.sizes().vec(), ElementsAre(128));
  EXPECT_LT((m->dora_scale - 1).abs().max().item<double>(), 1e-5);
  EXPECT_LT((ld2->weights->Find(2, Proj::kV)->dora_scale - 1.5).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(ld->weights->bytes(), 57344 + kLayers * (256 + 128) * 4);

  const at::Tensor plain_logits = Logits(lp->weights.get());
  EXPECT_LT(MaxDiff(Logits(ld->weights.get()), plain_logits), 1e-4);
  EXPECT_GT(MaxDiff(Logits(ld2->weights.get()), plain_logits), 1e-3);
}

// ------------------------------------------------------ bad adapters -------

TEST_F(LoraLoaderTest, RejectsWrongShapeOfLoraA) {
  FakeAdapter a = QvLora();
  const std::string name = LoraKey(1, "self_attn.q_proj", "lora_A.weight");
  a.Replace(name, {4, 128}, 99);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kFailedPrecondition,
                      {kWeightsFile, name, "[4, 128]", "expected [4, 256]"}));
}

TEST_F(LoraLoaderTest, RejectsWrongRankOfLoraB) {
  FakeAdapter a = QvLora();
  const std::string name = LoraKey(0, "self_attn.v_proj", "lora_B.weight");
  a.Replace(name, {128, 8}, 99);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kFailedPrecondition,
                      {name, "[128, 8]", "expected [128, 4]"}));
}

TEST_F(LoraLoaderTest, RejectsMissingLoraB) {
  FakeAdapter a = QvLora();
  const std::string name = LoraKey(2, "self_attn.v_proj", "lora_B.weight");
  a.Remove(name);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kInvalidArgument,
                      {kWeightsFile, "missing tensor", name}));
}

TEST_F(LoraLoaderTest, RejectsTargetedModuleWithoutTensors) {
  FakeAdapter a = QvLora();
  a.Remove(LoraKey(3, "self_attn.q_proj", "lora_A.weight"));
  a.Remove(LoraKey(3, "self_attn.q_proj", "lora_B.weight"));
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kInvalidArgument,
                      {"missing tensor", LoraKey(3, "self_attn.q_proj", "lora_A.weight"), kConfigFile}));
}

TEST_F(LoraLoaderTest, RejectsTensorsOfAnUntargetedModule) {
  FakeAdapter a = QvLora();
  a.Add(LoraKey(0, "self_attn.k_proj", "lora_A.weight"), {4, 256}, 50);
  a.Add(LoraKey(0, "self_attn.k_proj", "lora_B.weight"), {128, 4}, 51);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kFailedPrecondition,
                      {"model.layers.0.self_attn.k_proj", "not targeted"}));
}

TEST_F(LoraLoaderTest, RejectsUnknownModule) {
  FakeAdapter a = QvLora();
  const std::string name = LoraKey(0, "self_attn.rotary", "lora_A.weight");
  a.Add(name, {4, 32}, 50);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kFailedPrecondition,
                      {name, "unknown target"}));
}

TEST_F(LoraLoaderTest, RejectsLayerThatDoesNotExist) {
  FakeAdapter a = QvLora();
  const std::string name = LoraKey(9, "self_attn.q_proj", "lora_A.weight");
  a.Add(name, {4, 256}, 50);
  a.Add(LoraKey(9, "self_attn.q_proj", "lora_B.weight"), {256, 4}, 51);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kFailedPrecondition,
                      {"layers.9.self_attn.q_proj", "layer 9 does not exist", "4 layers"}));
}

TEST_F(LoraLoaderTest, RejectsEmbeddingLoraTheConfigDoesNotTarget) {
  FakeAdapter a = QvLora();
  const std::string name = "base_model.model.model.embed_tokens.lora_embedding_A";
  a.Add(name, {4, 2048}, 50);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kFailedPrecondition,
                      {name, "model.embed_tokens is not targeted"}));
}

TEST_F(LoraLoaderTest, RejectsLmHeadLora) {
  FakeAdapter a = QvLora();
  const std::string name = "base_model.model.lm_head.lora_A.weight";
  a.Add(name, {4, 256}, 50);
  a.Add("base_model.model.lm_head.lora_B.weight", {2048, 4}, 51);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kInvalidArgument, {"lm_head.lora_", "lm_head"}));
}

TEST_F(LoraLoaderTest, RejectsLoraBias) {
  FakeAdapter a = QvLora();
  const std::string name = LoraKey(0, "self_attn.q_proj", "lora_B.bias");
  a.Add(name, {256}, 50);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kInvalidArgument, {name, "lora_bias"}));
}

TEST_F(LoraLoaderTest, RejectsKeysWithoutThePeftPrefix) {
  FakeAdapter a = QvLora();
  const std::string name = "model.layers.0.self_attn.k_proj.lora_A.weight";
  a.Add(name, {4, 256}, 50);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kInvalidArgument, {name, "base_model.model."}));
}

TEST_F(LoraLoaderTest, RejectsDoraConfigWithoutMagnitudes) {
  FakeAdapter a = QvLora();
  a.config["use_dora"] = true;
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kInvalidArgument,
                      {"missing tensor", "lora_magnitude_vector", "use_dora"}));
}

TEST_F(LoraLoaderTest, RejectsMagnitudeWithoutUseDora) {
  FakeAdapter a = QvLora();
  const std::string name = LoraKey(1, "self_attn.v_proj", "lora_magnitude_vector");
  a.Add(name, {128}, 50, 1.0f);
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kInvalidArgument,
                      {"unexpected tensor", name, "use_dora is false"}));
}

TEST_F(LoraLoaderTest, RejectsMagnitudeOfWrongShape) {
  FakeAdapter a = QvLora();
  a.config["use_dora"] = true;
  for (int64_t l = 0; l < kLayers; ++l) {
    a.Add(LoraKey(l, "self_attn.q_proj", "lora_magnitude_vector"), {256}, 60, 1.0f);
    a.Add(LoraKey(l, "self_attn.v_proj", "lora_magnitude_vector"), {l == 2 ? 256 : 128}, 61, 1.0f);
  }
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kFailedPrecondition,
                      {LoraKey(2, "self_attn.v_proj", "lora_magnitude_vector"), "[256]", "expected [128]"}));
}

TEST_F(LoraLoaderTest, RejectsIntegerDtype) {
  FakeAdapter a = QvLora();
  FakeTensor* t = a.Find(LoraKey(0, "self_attn.q_proj", "lora_A.weight"));
  ASSERT_NE(t, nullptr);
  t->dtype = StDType::kI32;  // same byte size as F32
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kInvalidArgument,
                      {t->name, "dtype I32", "not supported"}));
}

// Every LoRA tensor (A, B, DoRA magnitude) in every float dtype: a NaN or an
// infinity is refused, naming the file, the tensor and the first bad index.
TEST_F(LoraLoaderTest, RejectsNonFiniteValuesInEveryTensorAndDtype) {
  const std::pair<float, const char*> values[] = {
      {std::nanf(""), "NaN"}, {INFINITY, "+Inf"}, {-INFINITY, "-Inf"}};
  for (StDType dtype : {StDType::kF32, StDType::kF16, StDType::kBF16}) {
    for (const char* kind : {"lora_A.weight", "lora_B.weight", "lora_magnitude_vector"}) {
      for (const auto& [value, word] : values) {
        SCOPED_TRACE(absl::StrCat(std::string(model::StDTypeName(dtype)), " ", kind, " ", word));
        FakeAdapter a = QvLora();
        a.config["use_dora"] = true;
        for (int64_t l = 0; l < kLayers; ++l) {
          a.Add(LoraKey(l, "self_attn.q_proj", "lora_magnitude_vector"), {256}, 70, 1.0f);
          a.Add(LoraKey(l, "self_attn.v_proj", "lora_magnitude_vector"), {128}, 71, 1.0f);
        }
        for (FakeTensor& t : a.tensors) testing::ConvertTensor(t, dtype);
        const std::string name = LoraKey(2, "self_attn.v_proj", kind);
        FakeTensor* t = a.Find(name);
        ASSERT_NE(t, nullptr);
        testing::SetElement(*t, 100, -value);  // a later one is not the one reported
        testing::SetElement(*t, 17, value);
        EXPECT_TRUE(IsError(LoadUpload(a).status(), absl::StatusCode::kInvalidArgument,
                            {absl::StrCat("upload:", kWeightsFile, ": tensor '", name, "' holds ", word,
                                          " at index 17")}));
      }
    }
  }
}

// What a user first tried: an adapter whose tensors are all NaN, by path.
TEST_F(LoraLoaderTest, RejectsAllNanAdapter) {
  FakeAdapter a = QvLora();
  for (FakeTensor& t : a.tensors) {
    for (int64_t i = 0; i < static_cast<int64_t>(t.bytes.size() / 4); ++i) testing::SetElement(t, i, std::nanf(""));
  }
  EXPECT_TRUE(IsError(LoadDir(a, "all-nan").status(), absl::StatusCode::kInvalidArgument,
                      {kWeightsFile, a.tensors.front().name, "holds NaN at index 0"}));
}

TEST_F(LoraLoaderTest, RejectsTruncatedWeightsFile) {
  const std::string dir = QvLora().Write("truncated");
  const fs::path weights = fs::path(dir) / kWeightsFile;
  const auto size = fs::file_size(weights);
  fs::resize_file(weights, size - 1000);
  absl::StatusOr<AdapterFiles> files = ReadAdapterDirectory(dir);
  EXPECT_TRUE(IsError(files.status(), absl::StatusCode::kInvalidArgument,
                      {weights.string(), "past the end"}));

  // Cut inside the header too.
  fs::resize_file(weights, 20);
  EXPECT_TRUE(IsError(ReadAdapterDirectory(dir).status(), absl::StatusCode::kInvalidArgument,
                      {weights.string(), "header"}));

  // And the same bytes uploaded.
  std::string bytes = QvLora().Weights();
  bytes.resize(bytes.size() - 1000);
  EXPECT_TRUE(IsError(AdapterFilesFromUpload({{kConfigFile, QvLora().config.dump()}, {kWeightsFile, bytes}})
                          .status(),
                      absl::StatusCode::kInvalidArgument, {kWeightsFile, "past the end"}));
}

TEST_F(LoraLoaderTest, RejectsPickleOnlyDirectory) {
  const std::string dir = testing::MakeTempDir("pickle");
  std::ofstream(fs::path(dir) / kConfigFile) << QvLora().config.dump();
  std::ofstream(fs::path(dir) / "adapter_model.bin") << "\x80\x02}q\x00.";
  EXPECT_TRUE(IsError(ReadAdapterDirectory(dir).status(), absl::StatusCode::kInvalidArgument,
                      {"adapter_model.bin", "adapter_model.safetensors"}));
  EXPECT_TRUE(IsError(AdapterFilesFromUpload({{kConfigFile, "{}"}, {"adapter_model.bin", "x"}}).status(),
                      absl::StatusCode::kInvalidArgument, {"adapter_model.bin", "safetensors"}));
}

TEST_F(LoraLoaderTest, RejectsMissingConfig) {
  const std::string dir = QvLora().Write("no-config");
  fs::remove(fs::path(dir) / kConfigFile);
  EXPECT_TRUE(IsError(ReadAdapterDirectory(dir).status(), absl::StatusCode::kInvalidArgument,
                      {dir, kConfigFile}));
}

TEST_F(LoraLoaderTest, RejectsMissingWeightsAndMissingDirectory) {
  const std::string dir = QvLora().Write("no-weights");
  fs::remove(fs::path(dir) / kWeightsFile);
  EXPECT_TRUE(IsError(ReadAdapterDirectory(dir).status(), absl::StatusCode::kInvalidArgument,
                      {dir, kWeightsFile, "missing"}));
  const std::string gone = dir + "/does-not-exist";
  EXPECT_TRUE(IsError(ReadAdapterDirectory(gone).status(), absl::StatusCode::kNotFound, {gone}));
}

TEST_F(LoraLoaderTest, RejectsInvalidConfigThroughLoad) {
  FakeAdapter a = QvLora();
  a.config["bias"] = "everything";
  EXPECT_TRUE(IsError(LoadDir(a).status(), absl::StatusCode::kInvalidArgument,
                      {kConfigFile, "'bias'"}));
}

TEST_F(LoraLoaderTest, RejectsAdapterWithoutLoraTensors) {
  FakeAdapter a;
  a.config = PeftLoraConfig(4, 8, "q_proj");  // a regex that matches no module
  EXPECT_TRUE(IsError(LoadUpload(a).status(), absl::StatusCode::kInvalidArgument,
                      {kWeightsFile, "no LoRA tensors"}));
}

TEST_F(LoraLoaderTest, RejectsUploadWithUnexpectedFile) {
  std::map<std::string, std::string> files = QvLora().Files();
  files["README.md"] = "# my adapter";
  EXPECT_TRUE(IsError(AdapterFilesFromUpload(files).status(), absl::StatusCode::kInvalidArgument,
                      {"unexpected file 'README.md'"}));
}

TEST_F(LoraLoaderTest, RejectsUploadMissingAFile) {
  std::map<std::string, std::string> files = QvLora().Files();
  files.erase(kWeightsFile);
  EXPECT_TRUE(IsError(AdapterFilesFromUpload(files).status(), absl::StatusCode::kInvalidArgument,
                      {"missing", kWeightsFile}));
  files = QvLora().Files();
  files.erase(kConfigFile);
  EXPECT_TRUE(IsError(AdapterFilesFromUpload(files).status(), absl::StatusCode::kInvalidArgument,
                      {"missing", kConfigFile}));
}

}  // namespace
}  // namespace adapterd::adapters
