// The few-row base product against ATen's: fp32 and bfloat16, every tile
// height up to two tiles and a remainder, depths that end in a vector's
// tail (odd ones included, for bfloat16's pairs), an odd number of weight
// rows, and column ranges that split the output as threads do.
#include "server/model/skinny_gemm.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <ostream>
#include <vector>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

struct Case {
  at::ScalarType dtype;
  SkinnyType type;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.dtype; }

// Every combination in one test: each is a fraction of a millisecond, and
// a process per case would cost more than the cases.
TEST(SkinnyGemmTest, MatchesTheProductInDouble) {
  const int64_t n = 37, split = 13;
  for (const Case c : {Case{at::kFloat, SkinnyType::kF32}, Case{at::kBFloat16, SkinnyType::kBF16}}) {
    for (const int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 19}) {
      for (const int64_t k : {1, 7, 31, 32, 33, 64, 100}) {
        SCOPED_TRACE(::testing::Message() << c.dtype << " m " << m << " k " << k);
        at::manual_seed(m * 1000 + k);
        // Stored in `dtype`; the reference multiplies the same values in double.
        const at::Tensor x = at::randn({m, k}).to(c.dtype);
        const at::Tensor w = at::randn({n, k}).to(c.dtype);
        const at::Tensor b = at::randn({n}).to(c.dtype);
        at::Tensor want = at::addmm(b.to(at::kDouble), x.to(at::kDouble), w.to(at::kDouble).t());

        std::vector<float> packed(static_cast<size_t>(m * k), -1.0f);
        SkinnyPackRows(x.data_ptr(), c.type, m, k, k, packed.data());
        // Two calls on disjoint column ranges, one of them odd, as two
        // threads would make; the second without bias, into the same output.
        at::Tensor y = at::full({m, n}, 7.0, x.options());
        SkinnyGemm(packed.data(), m, k, w.data_ptr(), b.data_ptr(), c.type, 0, split, y.data_ptr(), n);
        SkinnyGemm(packed.data(), m, k, w.data_ptr(), nullptr, c.type, split, n, y.data_ptr(), n);
        want.narrow(1, split, n - split).sub_(b.narrow(0, split, n - split).to(at::kDouble));

        // fp32: sums of k products in a different order; bfloat16: one
        // rounding of the fp32 sum.
        const double rtol = c.dtype == at::kFloat ? 1e-5 : 8e-3;
        const double atol = c.dtype == at::kFloat ? 1e-4 * (1 + k / 64.0) : 1e-2 * (1 + k / 64.0);
        const at::Tensor got = y.to(at::kDouble);
        EXPECT_TRUE(at::allclose(got, want, rtol, atol)) << (got - want).abs().max();
      }
    }
  }
}

// Rows of x further apart than k (a view of wider rows) pack as the
// contiguous rows would.
TEST(SkinnyPackRowsTest, StridedRowsPackAsContiguousOnes) {
  for (const Case c : {Case{at::kFloat, SkinnyType::kF32}, Case{at::kBFloat16, SkinnyType::kBF16}}) {
    at::manual_seed(5);
    const at::Tensor wide = at::randn({3, 40}).to(c.dtype);
    const at::Tensor x = wide.narrow(1, 0, 33);
    const at::Tensor dense = x.contiguous();
    std::vector<float> a(3 * 33), b(3 * 33);
    SkinnyPackRows(x.data_ptr(), c.type, 3, 33, 40, a.data());
    SkinnyPackRows(dense.data_ptr(), c.type, 3, 33, 33, b.data());
    EXPECT_EQ(a, b) << c.dtype;
  }
}

}  // namespace
}  // namespace adapterd::model
