#include "bench/read_ceiling.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "server/common/parallel.h"
#include "server/model/cpu_clones.h"

namespace adapterd::bench {
namespace {

// The sum of p[0, n), n a multiple of 16, in sixteen running sums.
ADAPTERD_CLONES
float SumRange(const float* __restrict p, int64_t n) {
  float s[16] = {};
  for (int64_t i = 0; i + 16 <= n; i += 16) {
    for (int k = 0; k < 16; ++k) s[k] += p[i + k];
  }
  float t = 0;
  for (float v : s) t += v;
  return t;
}

}  // namespace

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double ReadRate(const at::Tensor& buf) {
  const int64_t n = buf.numel();
  const float* p = buf.data_ptr<float>();
  std::vector<double> rates;
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<float> sums(static_cast<size_t>(at::get_num_threads()), 0.0f);
    at::parallel_for(0, n, n / at::get_num_threads(), [&](int64_t begin, int64_t end) {
      sums[static_cast<size_t>(at::get_thread_num())] += SumRange(p + begin, end - begin);
    });
    rates.push_back(static_cast<double>(n) * 4 / SecondsSince(start));
    volatile float sink = sums[0];  // keeps the sums live
    (void)sink;
  }
  return Median(rates);
}

}  // namespace adapterd::bench
