// ModelOptions::lora_dtype (--lora_dtype): on a float32 CPU base, LoRA and
// DoRA A and B matrices kept in bfloat16 or float16 whatever their file's
// dtype. A float32 adapter loaded so must be exactly the same adapter as its
// copy saved in that dtype and loaded as saved (the path whose outputs the
// PEFT conformance test checks live, bf16_qkvo_r8 and f16_dora_r4): the
// same weights, bit for bit, the same DoRA scales and the same logits.
// Dtypes a model cannot take are refused naming the flag.
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "adapters/adapter_files.h"
#include "adapters/kind_loaders.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/adapter_weights.h"
#include "server/model/aten_delta_backend.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/llama_model.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/demo_model.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"

namespace adapterd::adapters {
namespace {

using model::Proj;
using model::StDType;
using ::testing::HasSubstr;
using testing::FakeAdapter;

absl::StatusOr<std::unique_ptr<model::LlamaModel>> DemoWith(c10::ScalarType dtype, c10::ScalarType lora_dtype) {
  absl::StatusOr<std::string> dir = model::EnsureDemoCheckpoint(testing::MakeTempDir("lora-dtype-demo"));
  if (!dir.ok()) return dir.status();
  model::ModelOptions o;
  o.dtype = dtype;
  o.lora_dtype = lora_dtype;
  return model::LlamaModel::Load(*dir, o);
}

absl::StatusOr<LoadedAdapter> Load(const FakeAdapter& a, const model::LlamaModel& base, const std::string& name) {
  absl::StatusOr<AdapterFiles> files = ReadAdapterDirectory(a.Write(name));
  if (!files.ok()) return files.status();
  return LoadLora(*files, base);
}

// A float32 LoRA on every projection, DoRA on all of them when `dora`.
FakeAdapter AllProjections(bool dora) {
  testing::LoraSpec spec;
  spec.r = 8;
  spec.alpha = 16;
  spec.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  spec.seed = dora ? 31 : 17;
  FakeAdapter a = testing::DemoLora(spec);
  if (!dora) return a;
  a.config["use_dora"] = true;
  const model::ModelConfig cfg = testing::DemoModelConfig();
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    for (int p = 0; p < model::kNumProj; ++p) {
      const std::string path(model::ProjPath(static_cast<Proj>(p)));
      const int64_t out = testing::ProjDims(cfg, path).first;
      at::Tensor m = 1 + 0.1 * at::sin(at::arange(out, at::kFloat) + static_cast<double>(l));
      a.tensors.push_back({testing::LoraKey(l, path, "lora_magnitude_vector"), StDType::kF32, {out},
                           std::string(static_cast<const char*>(m.data_ptr()), m.nbytes())});
    }
  }
  return a;
}

// `a` with its lora_A and lora_B tensors rounded to `dtype`, as torch saves them.
FakeAdapter SavedIn(FakeAdapter a, StDType dtype) {
  for (testing::FakeTensor& t : a.tensors) {
    if (t.name.find("lora_A") != std::string::npos || t.name.find("lora_B") != std::string::npos) {
      testing::ConvertTensor(t, dtype);
    }
  }
  return a;
}

// Every module of `got` holds exactly `want`'s weights, in `dtype` and in
// the same layout.
void ExpectSameModules(const model::AdapterWeights& got, const model::AdapterWeights& want, c10::ScalarType dtype) {
  for (int64_t l = 0; l < want.num_layers(); ++l) {
    for (int p = 0; p < model::kNumProj; ++p) {
      const model::LoraModule* g = got.Find(l, static_cast<Proj>(p));
      const model::LoraModule* w = want.Find(l, static_cast<Proj>(p));
      ASSERT_NE(g, nullptr);
      ASSERT_NE(w, nullptr);
      const std::string where = "layer " + std::to_string(l) + " " + std::string(model::ProjName(static_cast<Proj>(p)));
      EXPECT_EQ(g->a_t.scalar_type(), dtype) << where;
      EXPECT_EQ(g->b_t.scalar_type(), dtype) << where;
      EXPECT_EQ(g->a_t.strides(), w->a_t.strides()) << where;
      EXPECT_EQ(g->b_t.strides(), w->b_t.strides()) << where;
      EXPECT_TRUE(at::equal(g->a_t, w->a_t)) << where;
      EXPECT_TRUE(at::equal(g->b_t, w->b_t)) << where;
      ASSERT_EQ(g->dora_scale.defined(), w->dora_scale.defined()) << where;
      if (w->dora_scale.defined()) {
        EXPECT_TRUE(at::equal(g->dora_scale, w->dora_scale)) << where;
      }
    }
  }
}

class LoraDtypeTest : public testing::DemoModelTest {};

TEST_F(LoraDtypeTest, HalfPrecisionIsTheAdapterSavedSo) {
  for (const auto& [dtype, st] : {std::pair{c10::ScalarType::BFloat16, StDType::kBF16},
                                  std::pair{c10::ScalarType::Half, StDType::kF16}}) {
    SCOPED_TRACE(c10::toString(dtype));
    absl::StatusOr<std::unique_ptr<model::LlamaModel>> narrowing = DemoWith(c10::ScalarType::Float, dtype);
    ASSERT_TRUE(narrowing.ok()) << narrowing.status();
    for (bool dora : {false, true}) {
      SCOPED_TRACE(dora ? "dora" : "lora");
      const FakeAdapter f32 = AllProjections(dora);
      absl::StatusOr<LoadedAdapter> rounded = Load(f32, **narrowing, "f32");
      absl::StatusOr<LoadedAdapter> saved = Load(SavedIn(f32, st), base(), "saved");
      absl::StatusOr<LoadedAdapter> full = Load(f32, base(), "full");
      ASSERT_TRUE(rounded.ok()) << rounded.status();
      ASSERT_TRUE(saved.ok()) << saved.status();
      ASSERT_TRUE(full.ok()) << full.status();
      ExpectSameModules(*rounded->weights, *saved->weights, dtype);
      EXPECT_EQ(rounded->weights->bytes(), saved->weights->bytes());
      EXPECT_LT(rounded->weights->bytes(), full->weights->bytes());
      const at::Tensor got = testing::PromptLogits(**narrowing, rounded->weights.get());
      const at::Tensor want = testing::PromptLogits(base(), saved->weights.get());
      const at::Tensor unrounded = testing::PromptLogits(base(), full->weights.get());
      ASSERT_TRUE(got.defined() && want.defined() && unrounded.defined());
      EXPECT_EQ(testing::MaxDiff(got, want), 0.0);
      // The rounding is real: the float32 adapter's logits differ.
      EXPECT_GT(testing::MaxDiff(got, unrounded), 0.0);
    }
  }
}

TEST_F(LoraDtypeTest, Float32WidensAdaptersSavedInHalfPrecision) {
  absl::StatusOr<std::unique_ptr<model::LlamaModel>> widening =
      DemoWith(c10::ScalarType::Float, c10::ScalarType::Float);
  ASSERT_TRUE(widening.ok()) << widening.status();
  const FakeAdapter bf16 = SavedIn(AllProjections(false), StDType::kBF16);
  absl::StatusOr<LoadedAdapter> widened = Load(bf16, **widening, "widened");
  absl::StatusOr<LoadedAdapter> as_saved = Load(bf16, base(), "as-saved");
  ASSERT_TRUE(widened.ok()) << widened.status();
  ASSERT_TRUE(as_saved.ok()) << as_saved.status();
  const model::LoraModule* w = widened->weights->Find(2, Proj::kGate);
  const model::LoraModule* s = as_saved->weights->Find(2, Proj::kGate);
  ASSERT_NE(w, nullptr);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->a_t.scalar_type(), c10::ScalarType::BFloat16);  // auto keeps the file's
  EXPECT_EQ(w->a_t.scalar_type(), c10::ScalarType::Float);
  EXPECT_TRUE(at::equal(w->a_t, s->a_t.to(at::kFloat)));
  EXPECT_EQ(widened->weights->bytes(), 2 * as_saved->weights->bytes());
  // The same float32 products of the same values. A prompt too long for
  // the row kernels takes ATen's products of the widened weights: bit for
  // bit. A short one takes the row kernels, which sum a bfloat16 module's
  // products in another order than a float32 one's: equal to float32
  // rounding.
  std::vector<int64_t> long_prompt;
  for (int64_t i = 0; i <= model::AtenDeltaBackend::kSmallSegmentRows; ++i) long_prompt.push_back(1 + 97 * i % 2000);
  EXPECT_EQ(testing::MaxDiff(testing::PromptLogits(**widening, widened->weights.get(), long_prompt),
                             testing::PromptLogits(base(), as_saved->weights.get(), long_prompt)),
            0.0);
  EXPECT_LT(testing::MaxDiff(testing::PromptLogits(**widening, widened->weights.get()),
                             testing::PromptLogits(base(), as_saved->weights.get())),
            1e-5);
}

TEST_F(LoraDtypeTest, RefusedWhereLoraWeightsTakeTheModelsDtype) {
  absl::StatusOr<std::unique_ptr<model::LlamaModel>> m = DemoWith(c10::ScalarType::BFloat16, c10::ScalarType::Half);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("--lora_dtype=float16 on a bfloat16 model on cpu"));
  m = DemoWith(c10::ScalarType::BFloat16, c10::ScalarType::Float);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("--lora_dtype=float32 on a bfloat16 model on cpu"));
  // The model's own dtype is accepted.
  m = DemoWith(c10::ScalarType::BFloat16, c10::ScalarType::BFloat16);
  EXPECT_TRUE(m.ok()) << m.status();
}

}  // namespace
}  // namespace adapterd::adapters
