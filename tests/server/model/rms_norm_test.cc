// The one-pass RMSNorm against transformers' formula in ATen ops (float32
// normalisation, rounding to the model dtype, weight product in that dtype).
#include "server/model/rms_norm.h"

#include <ATen/ATen.h>

#include <tuple>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

at::Tensor Reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(x.scalar_type());
}

class RmsNormTest : public ::testing::TestWithParam<std::tuple<at::ScalarType, int64_t>> {};

TEST_P(RmsNormTest, MatchesTheTransformersFormula) {
  const auto& [dtype, hidden] = GetParam();
  at::manual_seed(hidden);
  const at::Tensor x = (at::randn({37, hidden}) * 3).to(dtype);
  const at::Tensor w = (1 + 0.1 * at::randn({hidden})).to(dtype);
  const at::Tensor got = RmsNorm(x, w, 1e-6);
  const at::Tensor want = Reference(x, w, 1e-6);
  ASSERT_EQ(got.scalar_type(), dtype);
  ASSERT_EQ(got.sizes(), want.sizes());
  // float32 up to summation order; half precision up to one rounding step.
  const double tol = dtype == at::kFloat ? 1e-5 : dtype == at::kBFloat16 ? 1.6e-2 : 2e-3;
  const at::Tensor diff = (got.to(at::kFloat) - want.to(at::kFloat)).abs();
  EXPECT_LE((diff / want.to(at::kFloat).abs().clamp_min(1e-3)).max().item<double>(), tol);
  // A view that is not contiguous takes the ATen path and agrees as well.
  const at::Tensor strided = at::cat({x, x}, 1).narrow(1, 0, hidden);
  EXPECT_TRUE(at::allclose(RmsNorm(strided, w, 1e-6).to(at::kFloat), want.to(at::kFloat), tol, 1e-3));
}

// The fused residual sum and norm equal ATen's add followed by RmsNorm, bit
// for bit, in every dtype; rows that are not contiguous take ATen's path.
TEST_P(RmsNormTest, AddRmsNormIsTheSumThenTheNorm) {
  const auto& [dtype, hidden] = GetParam();
  at::manual_seed(hidden + 1);
  const at::Tensor x = (at::randn({37, hidden}) * 3).to(dtype);
  const at::Tensor h = (at::randn({37, hidden}) * 2).to(dtype);
  const at::Tensor w = (1 + 0.1 * at::randn({hidden})).to(dtype);
  const at::Tensor sum = x + h;
  const at::Tensor normed = RmsNorm(sum, w, 1e-6);
  const AddRmsNormResult got = AddRmsNorm(x, h, w, 1e-6);
  ASSERT_EQ(got.sum.scalar_type(), dtype);
  ASSERT_EQ(got.normed.scalar_type(), dtype);
  EXPECT_TRUE(at::equal(got.sum, sum));
  EXPECT_TRUE(at::equal(got.normed, normed));
  const at::Tensor strided = at::cat({h, h}, 1).narrow(1, 0, hidden);
  const AddRmsNormResult aten = AddRmsNorm(x, strided, w, 1e-6);
  EXPECT_TRUE(at::equal(aten.sum, sum));
  EXPECT_TRUE(at::equal(aten.normed, normed));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RmsNormTest,
                         ::testing::Combine(::testing::Values(at::kFloat, at::kBFloat16, at::kHalf),
                                            ::testing::Values(int64_t{7}, int64_t{64}, int64_t{77}, int64_t{768})));

}  // namespace
}  // namespace adapterd::model
