// SwiGlu against ATen's silu(gate) * up on tensors of the dtype, the ops
// transformers runs (silu's result rounded before the product): float32,
// bfloat16 and float16, gate and up as column views of one
// fused product, widths with and without a tail past the vector loop,
// inputs across the range where e^-g saturates, and what it must refuse.
#include "server/model/swiglu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

void Check(int64_t rows, int64_t cols, double spread, at::ScalarType dtype) {
  at::manual_seed(7);
  const at::Tensor fused = (at::randn({rows, 2 * cols}) * spread).to(dtype);
  const at::Tensor gate = fused.narrow(1, 0, cols), up = fused.narrow(1, cols, cols);
  ASSERT_TRUE(SwiGluSupports(gate, up));
  const at::Tensor got = SwiGlu(gate, up);
  const at::Tensor want = at::silu(gate) * up;
  ASSERT_TRUE(got.is_contiguous());
  ASSERT_EQ(got.sizes(), gate.sizes());
  ASSERT_EQ(got.scalar_type(), dtype);
  // The same roundings; e^x differs from ATen's by a few float32 ulp, which
  // can move a rounded half-precision result by one step of the dtype.
  const double tol = dtype == at::kFloat ? 2e-6 : dtype == at::kBFloat16 ? 8e-3 : 1e-3;
  const at::Tensor g = got.to(at::kFloat), w = want.to(at::kFloat);
  const double excess = ((g - w).abs() - tol * w.abs() - 1e-6).max().item<double>();
  EXPECT_LE(excess, 0.0) << at::toString(dtype) << " " << rows << "x" << cols << " spread " << spread;
}

TEST(SwiGluTest, MatchesAtenSiluTimesUp) {
  at::set_num_threads(2);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    Check(1, 2048, 1.0, dtype);    // one decode row of the bench model
    Check(64, 2048, 3.0, dtype);   // a step of 64, over both threads
    Check(5, 45, 1.0, dtype);      // a tail past the last 32 columns
    Check(3, 7, 1.0, dtype);       // a tail only
  }
  Check(16, 96, 40.0, at::kFloat);  // e^-g far into both saturations
}

TEST(SwiGluTest, RefusesWhatItCannotTake) {
  const at::Tensor a = at::zeros({2, 4});
  EXPECT_FALSE(SwiGluSupports(a, a.to(at::kBFloat16)));
  EXPECT_FALSE(SwiGluSupports(a.to(at::kDouble), a.to(at::kDouble)));
  EXPECT_FALSE(SwiGluSupports(a.t(), a.t()));
  EXPECT_FALSE(SwiGluSupports(a, at::zeros({2, 3})));
  EXPECT_FALSE(SwiGluSupports(a.view({8}), a.view({8})));
  EXPECT_THROW(SwiGlu(a, at::zeros({2, 3})), c10::Error);
}

}  // namespace
}  // namespace adapterd::model
