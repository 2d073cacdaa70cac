#include "server/common/compute_threads.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "server/common/parallel.h"

namespace adapterd {
namespace {

at::Tensor A(int64_t seed) {
  return at::arange(384 * 512, at::kDouble).reshape({384, 512}).mul(0.37 * seed).sin();
}
at::Tensor B(int64_t seed) {
  return at::arange(512 * 640, at::kDouble).reshape({512, 640}).mul(0.11 * seed).cos();
}

// Products large enough for OpenBLAS to split into jobs that wait on each
// other, in float64 and float32, against `want`: the float64 product
// computed on one thread, where OpenBLAS runs no jobs.
void ExpectProductsRight(int64_t seed, const at::Tensor& want) {
  const at::Tensor a = A(seed), b = B(seed);
  const double scale = want.abs().max().item<double>();
  const at::Tensor f64 = at::mm(a, b), f32 = at::mm(a.to(at::kFloat), b.to(at::kFloat));
  EXPECT_LE((f64 - want).abs().max().item<double>(), 1e-12 * scale) << "float64, seed " << seed;
  EXPECT_LE((f32.to(at::kDouble) - want).abs().max().item<double>(), 1e-4 * scale) << "float32, seed " << seed;
}

// SetComputeThreads hands OpenBLAS's jobs to ATen's pool. Products come out
// right when one thread computes, when two threads compute at once (each
// with a team of its own), and from inside a parallel region, where the
// pool is busy and the jobs get threads of their own.
TEST(ComputeThreadsTest, BlasJobsRunOnAtenPool) {
  std::map<int64_t, at::Tensor> want;
  {
    ScopedComputeThreads one(1);
    for (int64_t seed : {1, 2, 3, 4, 5, 6, 7, 10, 11}) want[seed] = at::mm(A(seed), B(seed));
  }
  SetComputeThreads(2);
#ifdef ADAPTERD_SERIAL_KERNELS
  EXPECT_FALSE(BlasRunsOnAtenPool());
  GTEST_SKIP() << "clang builds run without OpenMP (server/common/parallel.h)";
#endif
  ASSERT_TRUE(BlasRunsOnAtenPool()) << "Debian's LibTorch links OpenBLAS 0.3.29, which takes a job runner";
  const int64_t before = BlasParallelCalls();
  ExpectProductsRight(1, want[1]);
  EXPECT_GE(BlasParallelCalls(), before + 2) << "the products did not run as parallel jobs";

  for (int round = 0; round < 3; ++round) {
    std::thread other([&, round] { ExpectProductsRight(2 + 2 * round, want[2 + 2 * round]); });
    ExpectProductsRight(3 + 2 * round, want[3 + 2 * round]);
    other.join();
  }

  at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
    EXPECT_TRUE(at::in_parallel_region());
    for (int64_t i = begin; i < end; ++i) ExpectProductsRight(10 + i, want.at(10 + i));
  });
}

}  // namespace
}  // namespace adapterd
