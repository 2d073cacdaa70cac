// oneDNN's inner product on packed weights, called directly, against
// at::linear: row counts on both sides of the layout's 64, a bias, both
// dtypes, concurrent callers, the cache's bound, and the errors it names.
#include "server/model/packed_linear.h"

#include <ATen/ATen.h>
#include <ATen/cpu/Utils.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

using ::testing::HasSubstr;

std::vector<at::ScalarType> Dtypes() {
  std::vector<at::ScalarType> out{at::kFloat};
  if (at::cpu::is_avx512_bf16_supported()) out.push_back(at::kBFloat16);
  return out;
}

double RelErr(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.to(at::kFloat);
  return (got.to(at::kFloat) - w).abs().max().item<double>() / w.abs().max().item<double>();
}

TEST(PackedLinearTest, MatchesAtenAtEveryRowCount) {
  c10::InferenceMode inference;
  at::manual_seed(5);
  for (const at::ScalarType dtype : Dtypes()) {
    // Odd sizes, so that oneDNN's blocks are padded.
    const at::Tensor w = (at::randn({100, 72}) / 8).to(dtype);
    const at::Tensor b = at::randn({100}).to(dtype);
    const at::Tensor packed = PackForInnerProduct(w);
    ASSERT_EQ(packed.scalar_type(), dtype);
    ASSERT_GE(packed.nbytes(), w.nbytes());
    for (const int64_t m : {1, 2, 17, 63, 64, 65, 300}) {
      for (const at::Tensor& bb : {at::Tensor(), b}) {
        const at::Tensor x = at::randn({m, 72}).to(dtype);
        const at::Tensor want = bb.defined() ? at::linear(x, w, bb) : at::linear(x, w);
        const at::Tensor got = PackedInnerProduct(x, w, packed, bb);
        ASSERT_EQ(got.sizes(), want.sizes());
        ASSERT_EQ(got.scalar_type(), dtype);
        EXPECT_LE(RelErr(got, want), dtype == at::kFloat ? 1e-5 : 1e-2) << dtype << " rows " << m;
      }
    }
    // Strided rows are read as their values.
    const at::Tensor wide = at::randn({9, 144}).to(dtype);
    const at::Tensor strided = wide.slice(1, 0, 72);
    EXPECT_LE(RelErr(PackedInnerProduct(strided, w, packed, at::Tensor()), at::linear(strided, w)),
              dtype == at::kFloat ? 1e-5 : 1e-2);
  }
}

TEST(PackedLinearTest, ConcurrentCallersGetTheirOwnProducts) {
  c10::InferenceMode inference;
  at::manual_seed(6);
  const at::Tensor w = at::randn({64, 48});
  const at::Tensor packed = PackForInnerProduct(w);
  std::vector<at::Tensor> xs, wants, gots(4);
  for (int t = 0; t < 4; ++t) {
    xs.push_back(at::randn({8 + t * 20, 48}));
    wants.push_back(at::linear(xs.back(), w));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      c10::InferenceMode inner;
      for (int i = 0; i < 50; ++i) gots[t] = PackedInnerProduct(xs[t], w, packed, at::Tensor());
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_LE(RelErr(gots[t], wants[t]), 1e-5) << t;
}

TEST(PackedLinearTest, CacheStaysWithinItsBound) {
  c10::InferenceMode inference;
  const at::Tensor w = at::randn({16, 16});
  const at::Tensor packed = PackForInnerProduct(w);
  for (int64_t m = 1; m <= static_cast<int64_t>(kMaxCachedPrimitives) + 40; ++m) {
    PackedInnerProduct(at::randn({m, 16}), w, packed, at::Tensor());
    ASSERT_LE(CachedInnerProducts(), kMaxCachedPrimitives);
  }
  EXPECT_GT(CachedInnerProducts(), 0u);
  const at::Tensor x = at::randn({3, 16});
  EXPECT_LE(RelErr(PackedInnerProduct(x, w, packed, at::Tensor()), at::linear(x, w)), 1e-5);
}

TEST(PackedLinearTest, BadArgumentsAreErrorsThatNameTheProduct) {
  c10::InferenceMode inference;
  const at::Tensor w = at::randn({32, 16});
  const at::Tensor packed = PackForInnerProduct(w);
  const at::Tensor small = PackForInnerProduct(at::randn({4, 16}));
  auto message = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "no error";
  };
  EXPECT_THAT(message([&] { PackedInnerProduct(at::randn({2, 16}), w, small, at::Tensor()); }),
              HasSubstr("2x16 by 32x16"));
  EXPECT_THAT(message([&] { PackedInnerProduct(at::randn({2, 8}), w, packed, at::Tensor()); }),
              HasSubstr("x is [2, 8], w is [32, 16]"));
  EXPECT_THAT(message([&] { PackedInnerProduct(at::randn({2, 16}).to(at::kDouble), w, packed, at::Tensor()); }),
              HasSubstr("packed"));
  EXPECT_THAT(message([&] { PackedInnerProduct(at::randn({2, 16}), w, packed, at::randn({31})); }),
              HasSubstr("the bias is [31]"));
  EXPECT_THAT(message([&] { PackForInnerProduct(at::randn({4, 16}).to(at::kHalf)); }), HasSubstr("Half"));
  EXPECT_THAT(message([&] { PackForInnerProduct(at::randn({16})); }), HasSubstr("CPU matrix"));
}

}  // namespace
}  // namespace adapterd::model
