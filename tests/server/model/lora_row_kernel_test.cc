// The direct LoRA row kernels against ATen's products (one module, and
// several sharing one input), for every stored dtype, the ranks with a fixed-size path (8, 16, 32) and others, and widths
// that are not multiples of a vector.
#include "server/model/lora_row_kernel.h"

#include <ATen/ATen.h>

#include <bit>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

struct Case {
  at::ScalarType dtype;
  LoraWeightType type;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.dtype; }

// The last parameter runs the kernels as on a CPU with AVX-512 (true) or
// without (false), whichever this CPU has: both forms are checked here.
class LoraRowKernelTest : public ::testing::TestWithParam<std::tuple<Case, int64_t, int64_t, bool>> {
 protected:
  void SetUp() override { LoraRowWideVectorsForTest(std::get<3>(GetParam()) ? 1 : 0); }
  void TearDown() override { LoraRowWideVectorsForTest(-1); }
};

TEST_P(LoraRowKernelTest, MatchesTheProductOfTheWidenedWeights) {
  const auto& [c, r, in, wide] = GetParam();
  const int64_t out = in + 3;
  at::manual_seed(r * 1000 + in);
  const at::Tensor x = at::randn({in});
  // Stored in `dtype`; the reference multiplies the same values in fp32.
  const at::Tensor a_t = (at::randn({in, r}) / 4).to(c.dtype).contiguous();
  const at::Tensor b_t = at::randn({r, out}).to(c.dtype).contiguous();
  const float scale = 1.5f;
  const at::Tensor want_tmp = at::mv(a_t.to(at::kFloat).t(), x) * scale;
  const at::Tensor y0 = at::randn({out});
  const at::Tensor want_y = y0 + at::mv(b_t.to(at::kFloat).t(), want_tmp);

  std::vector<float> tmp(static_cast<size_t>(r), -1.0f);
  LoraShrinkRow(x.data_ptr<float>(), a_t.data_ptr(), c.type, in, r, scale, tmp.data());
  const at::Tensor got_tmp = at::from_blob(tmp.data(), {r}, at::kFloat);
  EXPECT_TRUE(at::allclose(got_tmp, want_tmp, 1e-5, 1e-4)) << (got_tmp - want_tmp).abs().max();

  // Two, three and four modules sharing x (a group's q/k/v), in one pass:
  // module m's result is its own shrink with its own scale.
  std::vector<at::Tensor> as = {a_t};
  for (int m = 1; m < 4; ++m) as.push_back((at::randn({in, r}) / 4).to(c.dtype).contiguous());
  const float scales[4] = {1.5f, -0.5f, 2.0f, 0.25f};
  for (int64_t count = 2; count <= 4; ++count) {
    std::vector<const void*> ptrs;
    for (int64_t m = 0; m < count; ++m) ptrs.push_back(as[m].data_ptr());
    std::vector<float> multi(static_cast<size_t>(count * r), -1.0f);
    LoraShrinkRowMulti(x.data_ptr<float>(), ptrs.data(), count, c.type, in, r, scales, multi.data());
    for (int64_t m = 0; m < count; ++m) {
      const at::Tensor want = at::mv(as[m].to(at::kFloat).t(), x) * scales[m];
      const at::Tensor got = at::from_blob(multi.data() + m * r, {r}, at::kFloat);
      EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-4)) << "count " << count << " module " << m << ": "
                                                       << (got - want).abs().max();
    }
  }

  at::Tensor y = y0.clone();
  LoraExpandRow(want_tmp.data_ptr<float>(), b_t.data_ptr(), c.type, r, out, y.data_ptr<float>());
  EXPECT_TRUE(at::allclose(y, want_y, 1e-5, 1e-4)) << (y - want_y).abs().max();
}

// Several rows at once (a prompt's rows of one adapter) give each row what
// the one-row kernels give it, bit for bit, for one to nine rows (whole
// groups of rows and the rows left over), one to four modules, and rows
// that are not contiguous.
TEST_P(LoraRowKernelTest, RowsAtOnceEqualRowByRow) {
  const auto& [c, r, in, wide] = GetParam();
  const int64_t out = in + 3, ldx = in + 5, ldy = out + 2;
  at::manual_seed(r * 7 + in);
  const at::Tensor x = at::randn({9, ldx});
  const at::Tensor y0 = at::randn({9, ldy});
  std::vector<at::Tensor> as, bs;
  for (int m = 0; m < 4; ++m) {
    as.push_back((at::randn({in, r}) / 4).to(c.dtype).contiguous());
    bs.push_back(at::randn({r, out}).to(c.dtype).contiguous());
  }
  const float scales[4] = {1.5f, -0.5f, 2.0f, 0.25f};
  for (int64_t count = 1; count <= 4; ++count) {
    std::vector<const void*> ptrs;
    for (int64_t m = 0; m < count; ++m) ptrs.push_back(as[m].data_ptr());
    const int64_t ldt = count * r + 1;
    for (int64_t rows = 1; rows <= 9; ++rows) {
      const std::string where = "count " + std::to_string(count) + " rows " + std::to_string(rows);
      std::vector<float> got(static_cast<size_t>(rows * ldt), -1.0f), want(got.size(), -1.0f);
      LoraShrinkRows(x.data_ptr<float>(), ldx, rows, ptrs.data(), count, c.type, in, r, scales, got.data(), ldt);
      for (int64_t j = 0; j < rows; ++j) {
        LoraShrinkRowMulti(x.data_ptr<float>() + j * ldx, ptrs.data(), count, c.type, in, r, scales,
                           want.data() + j * ldt);
      }
      EXPECT_EQ(got, want) << where;

      at::Tensor y_got = y0.clone(), y_want = y0.clone();
      for (int64_t m = 0; m < count; ++m) {
        LoraExpandRows(got.data() + m * r, ldt, rows, bs[m].data_ptr(), c.type, r, out, y_got.data_ptr<float>(), ldy);
        for (int64_t j = 0; j < rows; ++j) {
          LoraExpandRow(want.data() + j * ldt + m * r, bs[m].data_ptr(), c.type, r, out,
                        y_want.data_ptr<float>() + j * ldy);
        }
      }
      EXPECT_TRUE(at::equal(y_got, y_want)) << where << ": " << (y_got - y_want).abs().max();
      // The columns past each row's `out` are left alone.
      EXPECT_TRUE(at::equal(y_got.narrow(1, out, ldy - out), y0.narrow(1, out, ldy - out))) << where;
    }
  }
}

// Activation rows round-trip as ATen converts them: widening is exact, and
// narrowing rounds as to(dtype) does, ties to even, infinities and NaNs
// included, over lengths that end in a vector's tail.
TEST(LoraRowConversionTest, RowsConvertAsAtenDoes) {
  at::manual_seed(3);
  for (const Case c : {Case{at::kBFloat16, LoraWeightType::kBF16}, Case{at::kHalf, LoraWeightType::kF16}}) {
    for (const int64_t n : {int64_t{1}, int64_t{17}, int64_t{4099}}) {
      at::Tensor src = at::randn({n}) * 1000;
      // Exact ties between two bfloat16 values, and values past float16's range.
      if (n > 8) {
        src[0] = std::bit_cast<float>(uint32_t{0x3F808000});
        src[1] = std::bit_cast<float>(uint32_t{0x3F818000});
        src[2] = std::numeric_limits<float>::infinity();
        src[3] = -std::numeric_limits<float>::quiet_NaN();
        src[4] = 70000.0f;
        src[5] = -1e-8f;
      }
      const at::Tensor want = src.to(c.dtype);
      at::Tensor got = at::empty({n}, c.dtype);
      NarrowRow(src.data_ptr<float>(), n, c.type, got.data_ptr());
      const at::Tensor want_bits = want.view(at::kShort), got_bits = got.view(at::kShort);
      const at::Tensor nan = want.isnan();
      EXPECT_TRUE(at::equal(got.isnan(), nan)) << c.dtype << " n=" << n;
      EXPECT_TRUE(at::equal(got_bits.masked_fill(nan, 0), want_bits.masked_fill(nan, 0))) << c.dtype << " n=" << n;

      std::vector<float> wide(static_cast<size_t>(n));
      WidenRow(want.data_ptr(), c.type, n, wide.data());
      const at::Tensor widened = at::from_blob(wide.data(), {n}, at::kFloat);
      EXPECT_TRUE(at::equal(widened.nan_to_num(0), want.to(at::kFloat).nan_to_num(0))) << c.dtype << " n=" << n;
    }
  }
}

std::string CaseName(const ::testing::TestParamInfo<std::tuple<Case, int64_t, int64_t, bool>>& info) {
  static const char* const kNames[] = {"f32", "f16", "bf16"};
  const auto& [c, r, in, wide] = info.param;
  return std::string(kNames[static_cast<int>(c.type)]) + "_r" + std::to_string(r) + "_in" + std::to_string(in) +
         (wide ? "_wide" : "_narrow");
}

INSTANTIATE_TEST_SUITE_P(
    AllTypes, LoraRowKernelTest,
    ::testing::Combine(::testing::Values(Case{at::kFloat, LoraWeightType::kF32},
                                         Case{at::kHalf, LoraWeightType::kF16},
                                         Case{at::kBFloat16, LoraWeightType::kBF16}),
                       ::testing::Values(int64_t{1}, int64_t{5}, int64_t{8}, int64_t{16}, int64_t{32},
                                         int64_t{64}),
                       // out = in + 3: a tail only; a block and a tail; two
                       // whole chunks of the expand (2048 outputs) and a tail.
                       ::testing::Values(int64_t{7}, int64_t{256}, int64_t{4101}), ::testing::Bool()),
    CaseName);

}  // namespace
}  // namespace adapterd::model
