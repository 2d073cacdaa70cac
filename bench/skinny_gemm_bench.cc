// The few-row base product (server/model/linear.h, SkinnyGemm) and oneDNN's
// GEMM on packed weights (PackLinearWeight, called directly) against
// LibTorch's at::linear and against LibTorch's own operator on packed
// weights (mkldnn::_linear_pointwise, which builds oneDNN's descriptor on
// every call), side by side in one run, and SkinnyGemm against the
// machine's memory read rate measured in the same run. A last line times
// one tiny packed product (64x64 by 64x64) both ways: there the per-call
// cost outside the GEMM is nearly all of it.
//
// The workload is one decode step's base products on the ~100M bench model
// (hidden 768, intermediate 2048, 8 layers, 4 KV heads of 64, vocabulary
// 32000), with the server's fused groups: per layer q/k/v [1280, 768], o
// [768, 768], gate/up [4096, 768] and down [768, 2048], then the LM head
// [32000, 768]: 75M weights, more than the caches hold, so every step reads
// them from memory. For each row count of --rows, the two paths alternate
// step by step; the printed figures are medians over --reps steps each.
//
//   ./x run "build/bench/adapterd_skinny_gemm_bench --dtype bfloat16"
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/read_ceiling.h"
#include "server/common/compute_threads.h"
#include "server/model/linear.h"

ABSL_FLAG(std::string, dtype, "float32", "weights and activations: float32 or bfloat16");
ABSL_FLAG(std::string, rows, "1,2,4,8,12,16,24,32,48,64", "row counts (comma-separated, each 1 to 64)");
ABSL_FLAG(int, threads, 2, "compute threads");
ABSL_FLAG(int, reps, 9, "steps measured per path and row count");

namespace adapterd::model {
namespace {

struct Shape {
  int64_t out, in;
};

// LibTorch's own oneDNN operators, called as LibTorch's Python API calls
// them: the weight packed for 64 rows, and the product on it.
// The handle is looked up once, as LibTorch's Python bindings keep theirs.
at::Tensor CallOp(const c10::OperatorHandle& op, torch::jit::Stack stack) {
  op.callBoxed(&stack);
  return std::move(stack.back()).toTensor();
}

c10::OperatorHandle FindOp(const char* name) {
  const std::optional<c10::OperatorHandle> op = c10::Dispatcher::singleton().findOp(c10::OperatorName(name, ""));
  TORCH_CHECK(op.has_value(), "this LibTorch has no ", name);
  return *op;
}

at::Tensor TorchPacked(const at::Tensor& w) {
  static const c10::OperatorHandle op = FindOp("mkldnn::_reorder_linear_weight");
  return CallOp(op, {w, std::optional<int64_t>(64)});
}

at::Tensor TorchPackedLinear(const at::Tensor& x, const at::Tensor& packed) {
  static const c10::OperatorHandle op = FindOp("mkldnn::_linear_pointwise");
  return CallOp(op, {x, packed, std::optional<at::Tensor>(), std::string("none"),
                                              c10::List<std::optional<at::Scalar>>(), std::optional<std::string>()});
}

// Microseconds per call of a 64x64 by 64x64 packed product: (LibTorch's
// operator, adapterd's direct call), medians of alternating blocks.
std::pair<double, double> TinyProductMicros(at::ScalarType dtype) {
  const at::Tensor w = at::randn({64, 64}).to(dtype), x = at::randn({64, 64}).to(dtype);
  const at::Tensor torch_packed = TorchPacked(w), packed = PackLinearWeight(w);
  constexpr int kCalls = 2000;
  std::vector<double> theirs, ours;
  for (int block = 0; block < 11; ++block) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) TorchPackedLinear(x, torch_packed);
    theirs.push_back(bench::SecondsSince(start) / kCalls);
    start = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) Linear(x, w, at::Tensor(), 0, packed);
    ours.push_back(bench::SecondsSince(start) / kCalls);
  }
  return {bench::Median(theirs) * 1e6, bench::Median(ours) * 1e6};
}

int Run() {
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  at::ScalarType dtype = at::kFloat;
  if (dtype_name == "bfloat16") {
    dtype = at::kBFloat16;
  } else if (dtype_name != "float32") {
    std::fprintf(stderr, "--dtype must be float32 or bfloat16, not %s\n", dtype_name.c_str());
    return 2;
  }
  std::vector<int64_t> rows;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_rows), ',')) {
    int64_t m = 0;
    if (!absl::SimpleAtoi(part, &m) || m < 1 || m > 64) {
      std::fprintf(stderr, "--rows must be a comma-separated list of numbers from 1 to 64\n");
      return 2;
    }
    rows.push_back(m);
  }
  if (absl::GetFlag(FLAGS_reps) < 1 || absl::GetFlag(FLAGS_threads) < 1) {
    std::fprintf(stderr, "--reps and --threads must be at least 1\n");
    return 2;
  }
  // As the server does: one pool of --threads threads for ATen, OpenBLAS and our kernels.
  SetComputeThreads(absl::GetFlag(FLAGS_threads));
  c10::InferenceMode inference;
  std::vector<Shape> shapes;
  for (int l = 0; l < 8; ++l) shapes.insert(shapes.end(), {{1280, 768}, {768, 768}, {4096, 768}, {768, 2048}});
  shapes.push_back({32000, 768});
  std::vector<at::Tensor> weights, packed, torch_packed;
  int64_t bytes = 0;
  for (const Shape& s : shapes) {
    weights.push_back((at::randn({s.out, s.in}) / 30).to(dtype));
    packed.push_back(PackLinearWeight(weights.back()));
    if (packed.back().defined()) torch_packed.push_back(TorchPacked(weights.back()));
    bytes += weights.back().numel() * weights.back().element_size();
  }
  if (!packed.front().defined()) {
    std::fprintf(stderr, "this LibTorch has no oneDNN: no packed weights to compare\n");
    return 2;
  }
  const double ceiling = bench::ReadRate(at::ones({int64_t{1} << 28}));
  std::printf(
      "One decode step's base products of the ~100M model (%.1f MB of %s weights), %d threads, LibTorch's "
      "at::linear against adapterd's SkinnyGemm, oneDNN on packed weights called directly (--prepack_weights) "
      "and LibTorch's mkldnn::_linear_pointwise on the same packing, alternating, median of %d steps each; "
      "plain read ceiling %.1f GB/s measured in the same run:\n\n",
      bytes / 1e6, dtype_name.c_str(), at::get_num_threads(), absl::GetFlag(FLAGS_reps), ceiling / 1e9);
  std::printf("| rows | at::linear ms | SkinnyGemm ms | packed ms | LibTorch packed ms | SkinnyGemm speed-up | "
              "packed speed-up | packed over LibTorch packed | SkinnyGemm GB/s | SkinnyGemm share of read ceiling |\n"
              "|---|---|---|---|---|---|---|---|---|---|\n");
  for (const int64_t m : rows) {
    std::vector<at::Tensor> xs;
    for (const Shape& s : shapes) xs.push_back(at::randn({m, s.in}).to(dtype));
    std::vector<double> aten, skinny, pack, torch_pack;
    for (int rep = 0; rep < absl::GetFlag(FLAGS_reps) + 1; ++rep) {
      const auto start = std::chrono::steady_clock::now();
      for (size_t i = 0; i < shapes.size(); ++i) TorchPackedLinear(xs[i], torch_packed[i]);
      if (rep > 0) torch_pack.push_back(bench::SecondsSince(start));
      for (const LinearPath path : {LinearPath::kAten, LinearPath::kSkinny, LinearPath::kPacked}) {
        const int64_t limit = path == LinearPath::kSkinny ? 64 : 0;
        const auto start = std::chrono::steady_clock::now();
        for (size_t i = 0; i < shapes.size(); ++i) {
          Linear(xs[i], weights[i], at::Tensor(), limit, path == LinearPath::kPacked ? packed[i] : at::Tensor());
        }
        const double t = bench::SecondsSince(start);
        if (rep == 0) continue;  // the first step warms up
        (path == LinearPath::kAten ? aten : path == LinearPath::kSkinny ? skinny : pack).push_back(t);
      }
    }
    const double a = bench::Median(aten), s = bench::Median(skinny), p = bench::Median(pack);
    const double tp = bench::Median(torch_pack);
    std::printf("| %ld | %.2f | %.2f | %.2f | %.2f | %.2fx | %.2fx | %.2fx | %.1f | %.0f%% |\n", static_cast<long>(m),
                a * 1e3, s * 1e3, p * 1e3, tp * 1e3, a / s, a / p, tp / p, bytes / s / 1e9,
                100.0 * bytes / s / ceiling);
  }
  const auto [theirs, ours] = TinyProductMicros(dtype);
  std::printf("\nOne 64x64 by 64x64 packed product, median of 11 blocks of 2000 calls: LibTorch's "
              "mkldnn::_linear_pointwise %.1f us, adapterd's direct call %.1f us\n", theirs, ours);
  return 0;
}

}  // namespace
}  // namespace adapterd::model

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return adapterd::model::Run();
}
