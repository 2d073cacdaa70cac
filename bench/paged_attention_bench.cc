// Decode attention over the paged KV cache (server/model/paged_attention.h)
// against gathering each row's context and running ATen's attention over
// it (server/model/gathered_attention.h), and against the machine's memory
// read rate, measured in the same run.
//
// The workload is one layer of a decode step on the ~100M bench model (12
// query heads, 4 KV heads of 64): --rows rows, each with --context
// positions in 16-slot blocks scattered over the cache. The printed figures
// are medians over --reps calls, the two kernels alternating; "GB/s" is the
// keys and values read per second.
//
//   ./x run "build/bench/adapterd_paged_attention_bench --dtype bfloat16"
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/read_ceiling.h"
#include "server/model/gathered_attention.h"
#include "server/model/paged_attention.h"

ABSL_FLAG(std::string, dtype, "bfloat16", "cache and query dtype: float32, bfloat16 or float16");
ABSL_FLAG(int, rows, 64, "decode rows in the step");
ABSL_FLAG(std::string, contexts, "48,144,512,2048", "positions per row, one table line each");
ABSL_FLAG(int, threads, 2, "compute threads");
ABSL_FLAG(int, reps, 21, "calls measured per kernel");

namespace adapterd::model {
namespace {

using bench::Median;
using bench::ReadRate;
using bench::SecondsSince;

constexpr int64_t kHeads = 12, kKvHeads = 4, kHeadDim = 64, kBlock = 16;

struct Result {
  double paged_ms, gathered_ms, gbs;
};

Result Measure(int64_t rows, int64_t context, at::ScalarType dtype, int reps) {
  const int64_t per_row = (context + kBlock - 1) / kBlock;
  const int64_t blocks = rows * per_row + 8;
  const at::Tensor k = at::randn({blocks * kBlock, kKvHeads, kHeadDim}).to(dtype);
  const at::Tensor v = at::randn({blocks * kBlock, kKvHeads, kHeadDim}).to(dtype);
  const at::Tensor q = at::randn({rows, kHeads, kHeadDim}).to(dtype);
  std::vector<int32_t> all(static_cast<size_t>(blocks));
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), std::mt19937(7));
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(rows));
  std::vector<DecodeRow> decode;
  for (int64_t r = 0; r < rows; ++r) {
    tables[r].assign(all.begin() + r * per_row, all.begin() + (r + 1) * per_row);
    decode.push_back({&tables[r], context, r});
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  at::Tensor out = at::empty_like(q), want = at::empty_like(q);
  std::vector<double> paged, gathered;
  for (int i = 0; i < reps + 1; ++i) {  // the first call of each warms up
    auto t0 = std::chrono::steady_clock::now();
    PagedDecodeAttention(q, k, v, decode, kBlock, scale, out);
    if (i > 0) paged.push_back(SecondsSince(t0));
    t0 = std::chrono::steady_clock::now();
    const GatheredDecodeRows g = GatherDecodeRows(decode, kBlock, at::kCPU);
    GatheredDecodeAttention(q, k, v, g, scale, want);
    if (i > 0) gathered.push_back(SecondsSince(t0));
  }
  const double diff = (out.to(at::kFloat) - want.to(at::kFloat)).abs().max().item<double>();
  if (diff > (dtype == at::kFloat ? 1e-4 : 5e-2)) std::fprintf(stderr, "the two kernels differ by %g\n", diff);
  const double bytes = 2.0 * rows * context * kKvHeads * kHeadDim * static_cast<double>(k.element_size());
  return {Median(paged) * 1e3, Median(gathered) * 1e3, bytes / Median(paged) / 1e9};
}

int Run() {
  const std::string name = absl::GetFlag(FLAGS_dtype);
  const at::ScalarType dtype = name == "float32" ? at::kFloat : name == "float16" ? at::kHalf : at::kBFloat16;
  if (name != "float32" && name != "bfloat16" && name != "float16") {
    std::fprintf(stderr, "--dtype: expected float32, bfloat16 or float16, got %s\n", name.c_str());
    return 2;
  }
  std::vector<int64_t> contexts;
  for (const absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_contexts), ',')) {
    int64_t c = 0;
    if (!absl::SimpleAtoi(s, &c) || c < 1) {
      std::fprintf(stderr, "--contexts: not a positive count: %s\n", std::string(s).c_str());
      return 2;
    }
    contexts.push_back(c);
  }
  at::set_num_threads(absl::GetFlag(FLAGS_threads));
  c10::InferenceMode inference_mode;
  const double ceiling = ReadRate(at::ones({int64_t{1} << 28})) / 1e9;
  const int rows = absl::GetFlag(FLAGS_rows);
  std::printf(
      "One layer's decode attention, %d rows, 12 query heads over 4 KV heads of 64, %s, %d threads, medians of %d "
      "alternating calls; plain read ceiling %.1f GB/s measured in the same run:\n\n",
      rows, name.c_str(), absl::GetFlag(FLAGS_threads), absl::GetFlag(FLAGS_reps), ceiling);
  std::printf("| context | gathered ms | paged ms | speed-up | paged GB/s | share of read ceiling |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const int64_t c : contexts) {
    const Result r = Measure(rows, c, dtype, absl::GetFlag(FLAGS_reps));
    std::printf("| %lld | %.3f | %.3f | %.2fx | %.1f | %.0f%% |\n", static_cast<long long>(c), r.gathered_ms,
                r.paged_ms, r.gathered_ms / r.paged_ms, r.gbs, 100.0 * r.gbs / ceiling);
  }
  return 0;
}

}  // namespace
}  // namespace adapterd::model

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return adapterd::model::Run();
}
