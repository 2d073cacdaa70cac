// The kernels' host version against ATen products: shrink then expand over
// slots of mixed ranks (one of them 0 at a projection), rows without an
// adapter, fused output slices, bias and a nonlinearity, per row (BGMV) and
// per segment (SGMV), in float32 and bfloat16.
#include "server/gpu/host_lora_launcher.h"

#include <ATen/ATen.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace adapterd::gpu {
namespace {

struct Shape {
  at::ScalarType dtype;
  bool sgmv;
  bool bias_and_act;
};

void PrintTo(const Shape& s, std::ostream* os) { *os << s.dtype << (s.sgmv ? " sgmv" : " bgmv"); }

class HostLoraLauncherTest : public ::testing::TestWithParam<Shape> {};

TEST_P(HostLoraLauncherTest, ShrinkThenExpandEqualsMatrixProducts) {
  const Shape p = GetParam();
  at::manual_seed(7);
  constexpr int kRows = 11, kIn = 40, kSlots = 3;
  const std::vector<int> outs = {24, 8};
  // ranks[slot][slice]; slot 2 has nothing at slice 1.
  const int ranks[kSlots][2] = {{4, 4}, {8, 2}, {3, 0}};
  const std::vector<Segment> segs = {{0, 3, 0}, {3, 1, -1}, {4, 5, 1}, {9, 1, 2}, {10, 1, 0}};
  std::vector<int> row_slot(kRows, -1);
  for (const Segment& s : segs) {
    for (int r = s.start; r < s.start + s.rows; ++r) row_slot[r] = s.slot;
  }
  at::Tensor x = at::randn({kRows, kIn}).to(p.dtype);
  const int R = 8, ld_tmp = 2 * R;
  std::vector<at::Tensor> a_t(2 * kSlots), b_t(2 * kSlots), bias_s(2 * kSlots), bias_e(2 * kSlots);
  std::vector<const void*> a_ptr[2], b_ptr[2], sbias[2], ebias[2];
  std::vector<int> rank[2], col[2];
  std::vector<float> scale = {0.5f, 2.0f, 1.5f};
  for (int j = 0; j < 2; ++j) {
    for (int s = 0; s < kSlots; ++s) {
      const int r = ranks[s][j], i = j * kSlots + s;
      a_t[i] = (at::randn({kIn, std::max(r, 1)}) * 0.3).to(p.dtype);
      b_t[i] = (at::randn({std::max(r, 1), outs[j]}) * 0.3).to(p.dtype);
      bias_s[i] = (at::randn({std::max(r, 1)}) * 0.1).to(p.dtype);
      bias_e[i] = (at::randn({outs[j]}) * 0.1).to(p.dtype);
      a_ptr[j].push_back(a_t[i].data_ptr());
      b_ptr[j].push_back(b_t[i].data_ptr());
      sbias[j].push_back(bias_s[i].data_ptr());
      ebias[j].push_back(bias_e[i].data_ptr());
      rank[j].push_back(r);
      col[j].push_back(j * R);
    }
  }
  std::vector<at::Tensor> y = {at::randn({kRows, outs[0]}).to(p.dtype), at::randn({kRows, outs[1]}).to(p.dtype)};
  std::vector<at::Tensor> want = {y[0].to(at::kDouble), y[1].to(at::kDouble)};
  for (int row = 0; row < kRows; ++row) {
    const int s = row_slot[row];
    if (s < 0) continue;
    for (int j = 0; j < 2; ++j) {
      const int i = j * kSlots + s;
      if (ranks[s][j] == 0) continue;
      at::Tensor t = at::mm(x.narrow(0, row, 1).to(at::kDouble), a_t[i].to(at::kDouble)) * scale[s];
      if (p.bias_and_act) t = at::relu(t + bias_s[i].to(at::kDouble));
      // The kernels keep tmp in float32.
      t = t.to(at::kFloat).to(at::kDouble);
      at::Tensor d = at::mm(t, b_t[i].to(at::kDouble));
      if (p.bias_and_act) d = d + bias_e[i].to(at::kDouble);
      want[j].narrow(0, row, 1).add_(d);
    }
  }

  at::Tensor tmp = at::full({kRows, ld_tmp}, std::nanf(""), at::kFloat);
  LaunchRows rows;
  rows.sgmv = p.sgmv;
  rows.row_slot = row_slot.data();
  rows.rows = kRows;
  rows.segments = segs.data();
  rows.num_segments = static_cast<int>(segs.size());
  rows.max_rows = 5;
  const HostLoraLauncher launcher;
  for (int j = 0; j < 2; ++j) {
    ShrinkArgs a;
    a.dtype = p.dtype == at::kFloat ? DType::kF32 : DType::kBF16;
    a.x = x.data_ptr();
    a.ldx = kIn;
    a.in = kIn;
    a.a_t = a_ptr[j].data();
    a.bias = p.bias_and_act ? sbias[j].data() : nullptr;
    a.rank = rank[j].data();
    a.scale = scale.data();
    a.act = p.bias_and_act ? Act::kRelu : Act::kIdentity;
    a.tmp = tmp.data_ptr<float>() + j * R;
    a.ld_tmp = ld_tmp;
    ASSERT_TRUE(launcher.Shrink(a, rows).ok());
  }
  ExpandArgs e;
  e.dtype = p.dtype == at::kFloat ? DType::kF32 : DType::kBF16;
  e.tmp = tmp.data_ptr<float>();
  e.ld_tmp = ld_tmp;
  e.num_slices = 2;
  for (int j = 0; j < 2; ++j) {
    e.slices[j] = {b_ptr[j].data(), p.bias_and_act ? ebias[j].data() : nullptr, rank[j].data(), col[j].data(),
                   y[j].data_ptr(), outs[j], outs[j]};
  }
  ASSERT_TRUE(launcher.Expand(e, rows).ok());
  const double tol = p.dtype == at::kFloat ? 1e-5 : 2e-2;
  for (int j = 0; j < 2; ++j) {
    const at::Tensor err = (y[j].to(at::kDouble) - want[j]).abs() / (want[j].abs() + 1);
    EXPECT_LE(err.max().item<double>(), tol) << "slice " << j;
  }
  // Rows without an adapter are left exactly as they were.
  EXPECT_TRUE(at::equal(y[0].narrow(0, 3, 1), want[0].narrow(0, 3, 1).to(p.dtype)));
}

INSTANTIATE_TEST_SUITE_P(Shapes, HostLoraLauncherTest,
                         ::testing::Values(Shape{at::kFloat, false, false}, Shape{at::kFloat, true, false},
                                           Shape{at::kFloat, true, true}, Shape{at::kBFloat16, false, false},
                                           Shape{at::kBFloat16, true, true}),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           return std::string(info.param.dtype == at::kFloat ? "F32" : "BF16") +
                                  (info.param.sgmv ? "Sgmv" : "Bgmv") + (info.param.bias_and_act ? "BiasRelu" : "");
                         });

TEST(HostLoraLauncherTest, BadLaunchesAreInvalidArgument) {
  const HostLoraLauncher launcher;
  ExpandArgs e;
  e.num_slices = kMaxSlices + 1;
  EXPECT_EQ(launcher.Expand(e, LaunchRows{}).code(), absl::StatusCode::kInvalidArgument);
  const Segment seg{0, 6, 0};
  LaunchRows rows;
  rows.sgmv = true;
  rows.segments = &seg;
  rows.num_segments = 1;
  rows.max_rows = 2;  // smaller than the segment
  const int rank = 1;
  ShrinkArgs a;
  a.rank = &rank;
  const absl::Status s = launcher.Shrink(a, rows);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("max_rows"), std::string::npos) << s;
}

}  // namespace
}  // namespace adapterd::gpu
