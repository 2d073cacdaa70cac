// Linear() against at::linear: the few-row path and the packed path where
// they apply (and a check that they did apply), and at::linear's own
// result everywhere else; the whole model through each path.
#include "server/model/linear.h"

#include <ATen/ATen.h>
#include <ATen/cpu/Utils.h>
#include <c10/core/GradMode.h>

#include <cstdint>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/llama_model.h"
#include "tests/support/demo_model.h"
#include "tests/support/test_env.h"

namespace adapterd::model {
namespace {

constexpr int64_t kRows = 16;

TEST(LinearTest, FewRowsMatchAtenInFloat32AndBfloat16) {
  c10::NoGradGuard no_grad;
  at::manual_seed(11);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const int64_t m : {int64_t{1}, int64_t{8}, kRows}) {
      const at::Tensor x = at::randn({m, 96}).to(dtype);
      const at::Tensor w = (at::randn({130, 96}) / 8).to(dtype);
      const at::Tensor b = at::randn({130}).to(dtype);
      for (const bool bias : {false, true}) {
        const at::Tensor bb = bias ? b : at::Tensor();
        ASSERT_TRUE(TakesSkinnyPath(x, w, bb, kRows)) << dtype << " rows " << m;
        const at::Tensor got = Linear(x, w, bb, kRows);
        const at::Tensor want = bias ? at::linear(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat))
                                     : at::linear(x.to(at::kFloat), w.to(at::kFloat));
        EXPECT_EQ(got.scalar_type(), dtype);
        EXPECT_EQ(got.sizes(), want.sizes());
        // bfloat16: one rounding of the fp32 sum, as at::linear rounds.
        const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
        EXPECT_TRUE(at::allclose(got.to(at::kFloat), want, tol, tol))
            << dtype << " rows " << m << " bias " << bias << ": " << (got.to(at::kFloat) - want).abs().max();
      }
    }
  }
}

// A view whose rows are further apart than their length (a narrow of the
// columns) is packed first; the result is the same.
TEST(LinearTest, StridedRowsMatchContiguousOnes) {
  c10::NoGradGuard no_grad;
  at::manual_seed(12);
  const at::Tensor wide = at::randn({4, 70});
  const at::Tensor x = wide.narrow(1, 3, 64);
  const at::Tensor w = at::randn({20, 64});
  ASSERT_TRUE(TakesSkinnyPath(x, w, at::Tensor(), kRows));
  EXPECT_TRUE(at::allclose(Linear(x, w, at::Tensor(), kRows), at::linear(x, w), 1e-5, 1e-5));
}

// Every case the kernel does not take goes to at::linear unchanged.
TEST(LinearTest, OtherProductsGoToAten) {
  at::manual_seed(13);
  const at::Tensor w = at::randn({24, 32});
  const at::Tensor few = at::randn({3, 32});
  const at::Tensor many = at::randn({kRows + 1, 32});
  EXPECT_FALSE(TakesSkinnyPath(few, w, at::Tensor(), 0));
  EXPECT_FALSE(TakesSkinnyPath(many, w, at::Tensor(), kRows));
  EXPECT_FALSE(TakesSkinnyPath(few.to(at::kHalf), w.to(at::kHalf), at::Tensor(), kRows));
  EXPECT_FALSE(TakesSkinnyPath(few, w.to(at::kBFloat16), at::Tensor(), kRows));
  EXPECT_FALSE(TakesSkinnyPath(few, w.t().contiguous().t(), at::Tensor(), kRows));
  EXPECT_FALSE(TakesSkinnyPath(few.t().contiguous().t(), w, at::Tensor(), kRows));
  EXPECT_FALSE(TakesSkinnyPath(few.unsqueeze(0), w, at::Tensor(), kRows));
  EXPECT_FALSE(TakesSkinnyPath(few, w, at::randn({24}).to(at::kBFloat16), kRows));
  EXPECT_FALSE(TakesSkinnyPath(at::randn({0, 32}), w, at::Tensor(), kRows));
  {
    // Autograd needs ATen's graph.
    c10::AutoGradMode grad(true);
    const at::Tensor wg = w.clone().requires_grad_();
    EXPECT_FALSE(TakesSkinnyPath(few, wg, at::Tensor(), kRows));
    const at::Tensor y = Linear(few, wg, at::Tensor(), kRows);
    EXPECT_TRUE(y.requires_grad());
  }
  EXPECT_TRUE(at::equal(Linear(many, w, at::Tensor(), kRows), at::linear(many, w)));
  EXPECT_TRUE(at::equal(Linear(few, w, at::Tensor(), 0), at::linear(few, w)));
}

// oneDNN's GEMM on a packed copy of w against at::linear on w: one row to
// past a decode step of 64, with and without a bias, in float32 and (on a
// CPU with AVX512-BF16) bfloat16. adapterd links oneDNN itself, so the
// float32 copy must exist: a build without it would test nothing here.
TEST(LinearTest, PackedWeightsMatchAten) {
  at::manual_seed(23);
  ASSERT_TRUE(PacksWeights(at::kFloat));
  EXPECT_EQ(PacksWeights(at::kBFloat16), at::cpu::is_avx512_bf16_supported());
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    if (!PacksWeights(dtype)) continue;
    const at::Tensor w = (at::randn({96, 80}) / 10).to(dtype);
    const at::Tensor b = at::randn({96}).to(dtype);
    const at::Tensor packed = PackLinearWeight(w);
    ASSERT_TRUE(packed.defined()) << dtype;
    for (const int64_t m : {1, 7, 64, 100}) {
      for (const at::Tensor& bb : {at::Tensor(), b}) {
        const at::Tensor x = at::randn({m, 80}).to(dtype);
        ASSERT_EQ(ChooseLinearPath(x, w, bb, 0, packed), LinearPath::kPacked) << dtype << " rows " << m;
        const at::Tensor want = (bb.defined() ? at::linear(x, w, bb) : at::linear(x, w)).to(at::kFloat);
        const at::Tensor got = Linear(x, w, bb, 0, packed);
        ASSERT_EQ(got.scalar_type(), dtype);
        ASSERT_EQ(got.sizes(), want.sizes());
        const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
        EXPECT_LE((got.to(at::kFloat) - want).abs().max().item<double>(), tol * want.abs().max().item<double>())
            << dtype << " rows " << m << (bb.defined() ? " with bias" : "");
      }
    }
    // Few rows still take SkinnyGemm where it is asked for, and what the
    // packed path cannot take goes to at::linear.
    const at::Tensor few = at::randn({4, 80}).to(dtype);
    EXPECT_EQ(ChooseLinearPath(few, w, at::Tensor(), kRows, packed), LinearPath::kSkinny);
    EXPECT_EQ(ChooseLinearPath(few.unsqueeze(0), w, at::Tensor(), 0, packed), LinearPath::kAten);
    EXPECT_EQ(ChooseLinearPath(few, w, at::Tensor(), 0, at::Tensor()), LinearPath::kAten);
    const at::Tensor wg = w.to(at::kFloat).clone().requires_grad_(true);
    EXPECT_EQ(ChooseLinearPath(few.to(at::kFloat), wg, at::Tensor(), 0, PackLinearWeight(wg.detach())),
              LinearPath::kAten);
  }
  EXPECT_FALSE(PacksWeights(at::kHalf));
  EXPECT_FALSE(PackLinearWeight(at::randn({8, 8}).to(at::kHalf)).defined());
  EXPECT_EQ(PackLinearWeight(at::randn({8, 8}).to(at::kBFloat16)).defined(), PacksWeights(at::kBFloat16));
  EXPECT_FALSE(PackLinearWeight(at::randn({8})).defined());
}

// The whole model through the kernel, and through the packed weights,
// against the model through LibTorch alone: the demo model's prompt logits
// (11 rows in every product) in float32 and bfloat16; and the default
// cut-off is the one documented.
TEST(LinearTest, ModelLogitsMatchTheModelThroughAten) {
  absl::StatusOr<std::string> dir = EnsureDemoCheckpoint(testing::MakeTempDir("skinny-model"));
  ASSERT_TRUE(dir.ok()) << dir.status();
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(::testing::Message() << dtype);
    ModelOptions options;
    options.dtype = dtype;
    absl::StatusOr<std::unique_ptr<LlamaModel>> by_default = LlamaModel::Load(*dir, options);
    ASSERT_TRUE(by_default.ok()) << by_default.status();
    EXPECT_EQ((*by_default)->options().skinny_rows, DefaultSkinnyRows(dtype, PacksWeights(dtype)));
    options.skinny_rows = 0;
    options.prepack_weights = false;
    absl::StatusOr<std::unique_ptr<LlamaModel>> aten = LlamaModel::Load(*dir, options);
    options.skinny_rows = kRows;
    absl::StatusOr<std::unique_ptr<LlamaModel>> skinny = LlamaModel::Load(*dir, options);
    options.skinny_rows = 0;
    options.prepack_weights = true;
    absl::StatusOr<std::unique_ptr<LlamaModel>> packed = LlamaModel::Load(*dir, options);
    ASSERT_TRUE(aten.ok() && skinny.ok() && packed.ok());
    const at::Tensor want = testing::PromptLogits(**aten, nullptr);
    // fp32: summation order only. bfloat16: every layer's outputs are
    // rounded, so one rounding apart anywhere moves the logits a little.
    const double scale = want.abs().max().item<double>();
    const double tol = dtype == at::kFloat ? 1e-5 : 3e-2;
    for (const auto& [name, model] : {std::pair{"SkinnyGemm", skinny->get()}, std::pair{"packed", packed->get()}}) {
      const at::Tensor got = testing::PromptLogits(*model, nullptr);
      ASSERT_TRUE(want.defined() && got.defined()) << name;
      EXPECT_LE(testing::MaxDiff(got, want), tol * scale) << name;
      if (dtype == at::kFloat) {
        // In float32 every path sums in its own order (LibTorch's is
        // OpenBLAS), so equal logits would mean one path taken twice. In
        // bfloat16 all three sum in float32 and round once, and the small
        // demo model's products can round to the same bits: there the unit
        // tests above assert the path instead.
        EXPECT_GT(testing::MaxDiff(got, want), 0.0) << name << ": the two models took the same path";
      }
    }
  }
  EXPECT_EQ(DefaultSkinnyRows(at::kFloat), 32);
  EXPECT_EQ(DefaultSkinnyRows(at::kFloat, true), 16);
  EXPECT_EQ(DefaultSkinnyRows(at::kBFloat16), at::cpu::is_amx_tile_supported() ? 8 : 32);
  EXPECT_EQ(DefaultSkinnyRows(at::kBFloat16, true), at::cpu::is_amx_tile_supported() ? 8 : 2);
  EXPECT_EQ(DefaultSkinnyRows(at::kHalf), 0);
}

}  // namespace
}  // namespace adapterd::model
