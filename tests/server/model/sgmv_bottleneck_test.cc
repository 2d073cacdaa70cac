// SgmvDeltaBackend's bottleneck adapters, their down and up projections run
// by the kernels' host version, against AtenDeltaBackend (AdapterHub's
// formula, BottleneckForward) on the same rows: Houlsby and Pfeiffer
// placements, a parallel adapter, layer norms, learned scaling, two
// nonlinearities (two launch pairs), one adapter in two segments, rows of
// the base between them, and an adapter the kernels leave to ATen (leaky
// ReLU) in the same call; single-row segments
// (BGMV) and longer ones (SGMV); float32 and bfloat16. A counting launcher
// shows the kernels ran.
#include <ATen/ATen.h>

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/model/aten_delta_backend.h"
#include "server/model/sgmv_delta_backend.h"
#include "tests/fakes/counting_lora_launcher.h"

namespace adapterd::model {
namespace {

constexpr int64_t kHidden = 40;
constexpr BottleneckLocation kLoc = BottleneckLocation::kOutput;

using CountingLauncher = testing::CountingLoraLauncher;

struct Shape {
  at::ScalarType dtype;
  int64_t rows_per_segment;
};

std::ostream& operator<<(std::ostream& os, const Shape& s) {
  return os << at::toString(s.dtype) << " x" << s.rows_per_segment;
}

at::Tensor Random(std::vector<int64_t> shape, at::ScalarType dtype, double amplitude = 0.3) {
  return (at::randn(shape) * amplitude).to(dtype);
}

std::shared_ptr<AdapterWeights> Bottleneck(int64_t m, Activation act, at::ScalarType dtype, bool parallel,
                                           bool norms, bool learned_scaling, bool residual_before_ln) {
  BottleneckModule b;
  b.down_t = Random({kHidden, m}, dtype);
  b.down_b = Random({m}, dtype, 0.1);
  b.up_t = Random({m, kHidden}, dtype);
  b.up_b = Random({kHidden}, dtype, 0.1);
  if (norms) {
    b.ln_before_w = (at::ones({kHidden}) + Random({kHidden}, at::kFloat, 0.1)).to(dtype);
    b.ln_before_b = Random({kHidden}, dtype, 0.1);
    b.ln_after_w = (at::ones({kHidden}) + Random({kHidden}, at::kFloat, 0.1)).to(dtype);
    b.ln_after_b = Random({kHidden}, dtype, 0.1);
  }
  if (learned_scaling) b.scaling_t = Random({1}, dtype, 1.0);
  b.scaling = 0.7;
  b.act = act;
  b.parallel = parallel;
  b.residual_before_ln = residual_before_ln;
  b.original_ln_before = !parallel;
  auto w = std::make_shared<AdapterWeights>(1, AdapterKind::kBottleneck);
  w->SetBottleneck(0, kLoc, std::move(b));
  return w;
}

class SgmvBottleneckTest : public ::testing::TestWithParam<Shape> {};

TEST_P(SgmvBottleneckTest, AppliesWhatAtenApplies) {
  const Shape shape = GetParam();
  at::manual_seed(11);
  const at::ScalarType dt = shape.dtype;
  const auto houlsby = Bottleneck(8, Activation::kRelu, dt, false, false, false, true);
  const auto pfeiffer = Bottleneck(12, Activation::kRelu, dt, false, true, true, false);
  const auto parallel = Bottleneck(6, Activation::kSilu, dt, true, false, false, true);
  const auto leaky = Bottleneck(4, Activation::kLeakyRelu, dt, false, false, false, true);
  const int64_t n = shape.rows_per_segment;
  // houlsby twice, a base gap, then the others.
  std::vector<AdapterSegment> segments = {{0, n, houlsby.get()},       {n, n, pfeiffer.get()},
                                          {3 * n, n, parallel.get()},  {4 * n, n, houlsby.get()},
                                          {5 * n, n, leaky.get()}};
  const int64_t T = 6 * n;
  const at::Tensor x = Random({T, kHidden}, dt, 1.0), h = Random({T, kHidden}, dt, 1.0);
  at::Tensor want = x + h, got = x + h;
  AtenDeltaBackend aten;
  aten.ApplyBottlenecks(x, h, want, 0, kLoc, segments);
  int launches = 0;
  SgmvDeltaBackend sgmv(std::make_unique<CountingLauncher>(&launches));
  sgmv.ApplyBottlenecks(x, h, got, 0, kLoc, segments);
  // relu and silu: a shrink and an expand each.
  EXPECT_EQ(launches, 4);
  const double tolerance = dt == at::kFloat ? 1e-5 : 2e-2;
  const at::Tensor g = got.to(at::kFloat), w = want.to(at::kFloat);
  EXPECT_LE((g - w).abs().max().item<double>(), tolerance * w.abs().max().item<double>());
  // The base rows keep x + h exactly.
  EXPECT_TRUE(at::equal(got.narrow(0, 2 * n, n), (x + h).narrow(0, 2 * n, n)));
  // And the adapted rows did change.
  EXPECT_GT((g - (x + h).to(at::kFloat)).abs().max().item<double>(), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SgmvBottleneckTest,
                         ::testing::Values(Shape{at::kFloat, 1}, Shape{at::kFloat, 6}, Shape{at::kBFloat16, 1},
                                           Shape{at::kBFloat16, 6}),
                         [](const auto& info) {
                           return std::string(info.param.dtype == at::kFloat ? "F32" : "BF16") +
                                  (info.param.rows_per_segment == 1 ? "DecodeRows" : "Segments");
                         });

}  // namespace
}  // namespace adapterd::model
