// Shared by the kernel benchmarks: medians, wall time, and the machine's
// memory read rate measured in the same run.
#ifndef ADAPTERD_BENCH_READ_CEILING_H_
#define ADAPTERD_BENCH_READ_CEILING_H_

#include <ATen/core/Tensor.h>

#include <chrono>
#include <vector>

namespace adapterd::bench {

double Median(std::vector<double> v);

double SecondsSince(std::chrono::steady_clock::time_point start);

// Bytes per second of a plain read of `buf` (fp32, a multiple of 16
// elements) over ATen's threads: the median of five passes.
double ReadRate(const at::Tensor& buf);

}  // namespace adapterd::bench

#endif  // ADAPTERD_BENCH_READ_CEILING_H_
