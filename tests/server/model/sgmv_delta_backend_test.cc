// SgmvDeltaBackend, its tables run by the kernels' host version, against
// AtenDeltaBackend on the same projection groups: q/k/v with adapters of
// different ranks and scales, an adapter without k, one adapter in two
// segments, rows of the base between them, and adapters the kernels leave
// to ATen (DoRA, a composite, weights in another dtype, bias deltas) in the
// same call; single-row segments (BGMV) and longer ones (SGMV); float32 and
// bfloat16. A counting launcher shows the kernels ran.
#include "server/model/sgmv_delta_backend.h"

#include <ATen/ATen.h>

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/model/aten_delta_backend.h"
#include "tests/fakes/counting_lora_launcher.h"

namespace adapterd::model {
namespace {

constexpr int64_t kIn = 48, kQ = 32, kKv = 16, kLayers = 2;

using CountingLauncher = testing::CountingLoraLauncher;

int64_t Width(Proj p) { return p == Proj::kQ ? kQ : kKv; }

LoraModule Module(Proj p, int64_t r, double scale, at::ScalarType dtype) {
  return LoraModule::FromPeft((at::randn({r, kIn}) * 0.3).to(dtype), (at::randn({Width(p), r}) * 0.3).to(dtype),
                              scale);
}

// A LoRA on the projections of `projs` with rank r (q gets r + 2).
std::shared_ptr<AdapterWeights> Lora(std::vector<Proj> projs, int64_t r, double scale, at::ScalarType dtype) {
  auto w = std::make_shared<AdapterWeights>(kLayers);
  for (int64_t l = 0; l < kLayers; ++l) {
    for (Proj p : projs) w->Set(l, p, Module(p, p == Proj::kQ ? r + 2 : r, scale, dtype));
  }
  return w;
}

struct Shape {
  at::ScalarType dtype;
  int64_t rows_per_segment;  // 1: decode rows (BGMV); 6: SGMV
};

void PrintTo(const Shape& s, std::ostream* os) { *os << s.dtype << " x" << s.rows_per_segment; }

class SgmvDeltaBackendTest : public ::testing::TestWithParam<Shape> {};

TEST_P(SgmvDeltaBackendTest, AddsWhatAtenAdds) {
  const Shape p = GetParam();
  at::manual_seed(3);
  const at::ScalarType dt = p.dtype;
  auto a = Lora({Proj::kQ, Proj::kK, Proj::kV}, 4, 2.0, dt);
  auto b = Lora({Proj::kQ, Proj::kV}, 8, 0.5, dt);  // no k
  auto dora = Lora({Proj::kQ, Proj::kV}, 4, 1.0, dt);
  for (int64_t l = 0; l < kLayers; ++l) {
    for (Proj pr : {Proj::kQ, Proj::kV}) {
      LoraModule m = *dora->Find(l, pr);
      m.dora_scale = at::rand({Width(pr)}) + 0.5;
      dora->Set(l, pr, m);
    }
  }
  auto composite = std::make_shared<AdapterWeights>(kLayers);
  for (int64_t l = 0; l < kLayers; ++l) {
    composite->AddComposed(l, Proj::kQ, Module(Proj::kQ, 2, 1.0, dt));
    composite->AddComposed(l, Proj::kQ, Module(Proj::kQ, 3, 0.7, dt));
  }
  // Weights kept in another dtype than the activations' (ATen widens them).
  auto other_dtype = Lora({Proj::kK}, 4, 1.0, dt == at::kFloat ? at::kBFloat16 : at::kFloat);
  auto with_bias = Lora({Proj::kV}, 2, 1.0, dt);
  for (int64_t l = 0; l < kLayers; ++l) with_bias->SetBiasDelta(l, Proj::kV, at::randn({kKv}).to(dt));

  const int64_t n = p.rows_per_segment;
  std::vector<AdapterSegment> segments;
  int64_t row = 0;
  const std::vector<const AdapterWeights*> order = {a.get(),         b.get(), nullptr,          dora.get(),
                                                     composite.get(), a.get(), other_dtype.get(), with_bias.get()};
  for (const AdapterWeights* w : order) {
    if (w != nullptr) segments.push_back({row, n, w});
    row += n;
  }
  const int64_t T = row;
  const at::Tensor x = at::randn({T, kIn}).to(dt);
  const at::Tensor y0 = at::randn({T, kQ + 2 * kKv}).to(dt);
  const std::vector<ProjSlice> group = {{Proj::kQ, 0, kQ}, {Proj::kK, kQ, kKv}, {Proj::kV, kQ + kKv, kKv}};
  const at::Tensor bias = at::randn({kQ + 2 * kKv}).to(dt);

  int launches = 0;
  const SgmvDeltaBackend sgmv(std::make_unique<CountingLauncher>(&launches));
  const AtenDeltaBackend aten;
  // The tables of a whole step, made once; and calls that make their own.
  const std::unique_ptr<DeltaStep> step = sgmv.BeginStep(segments, T, kLayers, at::kCPU, dt);
  ASSERT_NE(step, nullptr);
  for (int64_t i = 0; i < 2 * kLayers; ++i) {
    const int64_t l = i % kLayers;
    const DeltaStep* shared = i < kLayers ? step.get() : nullptr;
    at::Tensor want = y0.clone(), got = y0.clone();
    aten.AddDeltas(x, want, bias, l, group, segments);
    sgmv.AddDeltas(x, got, bias, l, group, segments, shared);
    const double tol = dt == at::kFloat ? 1e-5 : 2e-2;
    const at::Tensor err = (got.to(at::kFloat) - want.to(at::kFloat)).abs() / (want.to(at::kFloat).abs() + 1);
    EXPECT_LE(err.max().item<double>(), tol) << "layer " << l;
    EXPECT_FALSE(at::equal(got, y0));
    // The base's rows are untouched.
    EXPECT_TRUE(at::equal(got.narrow(0, 2 * n, n), y0.narrow(0, 2 * n, n)));
    // A single projection (o or down) alone in its group.
    at::Tensor yo = y0.narrow(1, 0, kQ).clone(), wo = yo.clone();
    const std::vector<ProjSlice> q_only = {{Proj::kQ, 0, kQ}};
    aten.AddDeltas(x, wo, at::Tensor(), l, q_only, segments);
    sgmv.AddDeltas(x, yo, at::Tensor(), l, q_only, segments, shared);
    EXPECT_LE(((yo.to(at::kFloat) - wo.to(at::kFloat)).abs() / (wo.to(at::kFloat).abs() + 1)).max().item<double>(),
              tol);
  }
  // q, k and v shrinks and one expand per group call, q and an expand per
  // single-projection call, in each layer.
  EXPECT_EQ(launches, 2 * kLayers * (4 + 2));
}

INSTANTIATE_TEST_SUITE_P(Shapes, SgmvDeltaBackendTest,
                         ::testing::Values(Shape{at::kFloat, 1}, Shape{at::kFloat, 6}, Shape{at::kBFloat16, 1},
                                           Shape{at::kBFloat16, 6}),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           return std::string(info.param.dtype == at::kFloat ? "F32" : "BF16") +
                                  (info.param.rows_per_segment == 1 ? "DecodeRows" : "Segments");
                         });

TEST(SgmvDeltaBackendTest, TheBackendIsChosenAtModelCreation) {
  EXPECT_TRUE(MakeDeltaBackend(at::kCPU, DeltaBackendKind::kSgmv).ok());
  EXPECT_TRUE(MakeDeltaBackend(at::kCPU, DeltaBackendKind::kAuto).ok());
  // This build has no CUDA kernels: asking for them on CUDA names why.
  const auto cuda = MakeDeltaBackend(c10::Device(c10::DeviceType::CUDA, 0), DeltaBackendKind::kSgmv);
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(cuda.status().message().find("cuda:0"), std::string::npos) << cuda.status();
  EXPECT_NE(cuda.status().message().find("gpu-bundle"), std::string::npos) << cuda.status();
  EXPECT_TRUE(MakeDeltaBackend(c10::Device(c10::DeviceType::CUDA, 0), DeltaBackendKind::kAuto).ok());
}

}  // namespace
}  // namespace adapterd::model
