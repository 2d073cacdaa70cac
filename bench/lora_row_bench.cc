// The direct LoRA row kernels (server/model/lora_row_kernel.h) against the
// machine's memory bandwidth, measured in the same run.
//
// The workload is one decode step's adapter rows on the ~100M bench model
// (hidden 768, intermediate 2048, 8 layers, 4 KV heads of 64): --adapters
// distinct rank-16 LoRAs on all seven projections, one row each (--rows:
// more, as a prompt's rows, four at a time or with --rows_at_once=false
// one at a time), in the order the step runs them (per layer: q/k/v as one shared shrink, o,
// gate/up as one shared shrink, down), each group's rows split over the
// threads as AtenDeltaBackend splits segments. Before each group the
// threads stream --flush_mb of other memory, as the base's weights pass
// through the caches between two groups in a step, so the adapters' weights
// come from memory. Each adapter's modules are packed into one region on
// huge pages, as the loader leaves them (AdapterWeights::PackLoras), or with
// --pack=false allocated tensor by tensor.
//
// The ceiling is a plain read of a 1 GiB buffer on the same threads. The
// printed figures are medians over --reps steps.
//
//   ./x run "build/bench/adapterd_lora_row_bench --adapters 32 --dtype bfloat16"
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/read_ceiling.h"
#include "server/common/parallel.h"
#include "server/model/adapter_weights.h"
#include "server/model/lora_row_kernel.h"

ABSL_FLAG(int, adapters, 32, "distinct adapters");
ABSL_FLAG(int, rows, 1, "rows per adapter: 1 for decode, more for a prompt's rows");
ABSL_FLAG(bool, rows_at_once, true,
          "a prompt's rows through LoraShrinkRows/LoraExpandRows four at a time; false: one row at a time");
ABSL_FLAG(std::string, dtype, "float32", "stored A and B: float32, bfloat16 or float16");
ABSL_FLAG(int, threads, 2, "compute threads");
ABSL_FLAG(int, flush_mb, 50, "MiB streamed before each group (the base's weights)");
ABSL_FLAG(int, reps, 15, "steps measured");
ABSL_FLAG(bool, prefetch_expand, true, "ask for the head of each B^T before the shrink, as the server does");
ABSL_FLAG(bool, pack, true,
          "each adapter's modules in one region on huge pages, as the loader leaves them; false: each tensor "
          "allocated on its own");

namespace adapterd::model {
namespace {

using bench::Median;
using bench::ReadRate;

struct Module {
  int64_t in, out;
};
// q, k, v, o, gate, up, down.
constexpr Module kModules[7] = {{768, 768}, {768, 256}, {768, 256}, {768, 768},
                                {768, 2048}, {768, 2048}, {2048, 768}};
constexpr int kLayers = 8, kRank = 16;

int Run() {
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  at::ScalarType dtype = at::kFloat;
  LoraWeightType type = LoraWeightType::kF32;
  if (dtype_name == "bfloat16") {
    dtype = at::kBFloat16;
    type = LoraWeightType::kBF16;
  } else if (dtype_name == "float16") {
    dtype = at::kHalf;
    type = LoraWeightType::kF16;
  } else if (dtype_name != "float32") {
    std::fprintf(stderr, "--dtype must be float32, bfloat16 or float16, not %s\n", dtype_name.c_str());
    return 2;
  }
  const int adapters = absl::GetFlag(FLAGS_adapters);
  if (adapters < 1 || absl::GetFlag(FLAGS_rows) < 1 || absl::GetFlag(FLAGS_reps) < 1 ||
      absl::GetFlag(FLAGS_threads) < 1 || absl::GetFlag(FLAGS_flush_mb) < 0) {
    std::fprintf(stderr, "--adapters, --rows, --reps and --threads must be at least 1, --flush_mb at least 0\n");
    return 2;
  }
  at::set_num_threads(absl::GetFlag(FLAGS_threads));
  // [adapter][layer][module]: A^T [in, r] and B^T [r, out].
  std::vector<AdapterWeights> weights;
  std::vector<at::Tensor> a_t, b_t;
  int64_t bytes = 0;
  weights.reserve(static_cast<size_t>(adapters));
  for (int a = 0; a < adapters; ++a) {
    AdapterWeights& w = weights.emplace_back(kLayers);
    for (int l = 0; l < kLayers; ++l) {
      for (int m = 0; m < 7; ++m) {
        w.Set(l, static_cast<Proj>(m),
              LoraModule::FromPeft((at::randn({kRank, kModules[m].in}) / 30).to(dtype),
                                   (at::randn({kModules[m].out, kRank}) / 30).to(dtype), 1.0));
      }
    }
    if (absl::GetFlag(FLAGS_pack)) w.PackLoras();
    for (int l = 0; l < kLayers; ++l) {
      for (int m = 0; m < 7; ++m) {
        const LoraModule& lm = *w.Find(l, static_cast<Proj>(m));
        a_t.push_back(lm.a_t);
        b_t.push_back(lm.b_t);
        bytes += static_cast<int64_t>(lm.a_t.nbytes() + lm.b_t.nbytes());
      }
    }
  }
  const int64_t rows = absl::GetFlag(FLAGS_rows);
  const bool at_once = absl::GetFlag(FLAGS_rows_at_once);
  const bool prefetch_expand = absl::GetFlag(FLAGS_prefetch_expand);
  const at::Tensor x = at::randn({adapters * rows, 2048});
  at::Tensor y = at::zeros({adapters * rows, 2048});
  const at::Tensor flush = at::ones({int64_t{absl::GetFlag(FLAGS_flush_mb)} << 18});
  const at::Tensor big = at::ones({int64_t{1} << 28});
  const double ceiling = ReadRate(big);

  std::vector<double> steps;
  for (int rep = 0; rep < absl::GetFlag(FLAGS_reps) + 1; ++rep) {
    double step = 0;
    for (int l = 0; l < kLayers; ++l) {
      for (int group = 0; group < 4; ++group) {
        volatile float sink = flush.sum().item<float>();
        (void)sink;
        const auto start = std::chrono::steady_clock::now();
        at::parallel_for(0, adapters, 1, [&](int64_t begin, int64_t end) {
          float tmp[4 * 3 * kRank];
          for (int64_t a = begin; a < end; ++a) {
            const size_t base = (static_cast<size_t>(a) * kLayers + l) * 7;
            const float scales[3] = {2.0f, 2.0f, 2.0f};
            // The group's modules: q/k/v, o, gate/up, down.
            static constexpr int kFirst[4] = {0, 3, 4, 6}, kCount[4] = {3, 1, 2, 1};
            const int first = kFirst[group], count = kCount[group];
            const void* as[3];
            for (int m = 0; m < count; ++m) as[m] = a_t[base + first + m].data_ptr();
            if (prefetch_expand) {
              for (int m = 0; m < count; ++m) {
                LoraPrefetchExpand(b_t[base + first + m].data_ptr(), type, kRank, kModules[first + m].out);
              }
            }
            const int64_t step_rows = at_once ? 4 : 1;
            for (int64_t row = a * rows; row < (a + 1) * rows; row += step_rows) {
              const int64_t n = std::min(step_rows, (a + 1) * rows - row);
              const float* xr = x.data_ptr<float>() + row * 2048;
              float* yr = y.data_ptr<float>() + row * 2048;
              LoraShrinkRows(xr, 2048, n, as, count, type, kModules[first].in, kRank, scales, tmp, count * kRank);
              for (int m = 0; m < count; ++m) {
                LoraExpandRows(tmp + m * kRank, count * kRank, n, b_t[base + first + m].data_ptr(), type, kRank,
                               kModules[first + m].out, yr, 2048);
              }
            }
          }
        });
        step += bench::SecondsSince(start);
      }
    }
    if (rep > 0) steps.push_back(step);  // the first step warms up
  }
  const double step = Median(steps);
  std::printf(
      "%d distinct rank-16 LoRAs on all 7 projections of the ~100M model, %s, %lld row(s) each%s, %d threads, "
      "%d MiB streamed between groups, %s; median of %zu steps:\n\n",
      adapters, dtype_name.c_str(), static_cast<long long>(rows),
      rows == 1 ? "" : (at_once ? " (four at a time)" : " (one at a time)"), at::get_num_threads(),
      absl::GetFlag(FLAGS_flush_mb),
      absl::GetFlag(FLAGS_pack) ? "packed per adapter" : "tensors allocated one by one", steps.size());
  std::printf("| adapter bytes per step | ms per step | GB/s | read ceiling GB/s | share of ceiling |\n");
  std::printf("|---|---|---|---|---|\n");
  std::printf("| %.1f MB | %.2f | %.1f | %.1f | %.0f%% |\n", bytes / 1e6, step * 1e3, bytes / step / 1e9, ceiling / 1e9,
              100.0 * bytes / step / ceiling);
  return 0;
}

}  // namespace
}  // namespace adapterd::model

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return adapterd::model::Run();
}
