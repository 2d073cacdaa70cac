// What the load-time NaN/Inf check (server/model/finite_check.h) costs:
// nanoseconds per element for each dtype, in cache and streaming from
// memory; milliseconds for a rank-64 LoRA on all seven projections of the
// ~100M bench model (hidden 768, intermediate 2048, 8 layers, 4 KV heads of
// 64) in F32 and BF16; and milliseconds for the demo base checkpoint and for
// any safetensors files named on the command line (read once first, as the
// server's Prefault does). Each figure is the minimum of several runs.
//
//   ./x run "build/bench/adapterd_finite_check_bench [file.safetensors ...]"
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "server/model/demo_checkpoint.h"
#include "server/model/finite_check.h"
#include "server/model/safetensors.h"

namespace adapterd::model {
namespace {

constexpr int kRuns = 9;

// Minimum seconds of `runs` calls of fn.
template <typename Fn>
double MinSeconds(int runs, Fn&& fn) {
  double best = 1e30;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

// Finite values of every magnitude (no all-exponent-bits pattern).
std::vector<std::byte> FiniteBytes(size_t n) {
  std::vector<std::byte> out(n);
  uint32_t s = 12345;
  for (size_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    out[i] = static_cast<std::byte>((s >> 24) & 0x3F);
  }
  return out;
}

void PerElement() {
  for (const size_t bytes : {size_t{256} << 10, size_t{256} << 20}) {
    const std::vector<std::byte> data = FiniteBytes(bytes);
    for (StDType d : {StDType::kF32, StDType::kF16, StDType::kBF16}) {
      const int64_t n = static_cast<int64_t>(bytes * 8 / StDTypeBits(d));
      bool found = false;
      const double s = MinSeconds(kRuns, [&] { found |= FindNonFinite(d, data).has_value(); });
      std::printf("per element, %s, %zu KiB buffer: %.3f ns (%.1f GB/s)%s\n", std::string(StDTypeName(d)).c_str(),
                  bytes >> 10, s / n * 1e9, bytes / s / 1e9, found ? " UNEXPECTED NON-FINITE" : "");
    }
  }
}

// All tensors of `f`, checked as the loaders check them.
double CheckAll(const SafetensorsFile& f) {
  return MinSeconds(kRuns, [&] {
    for (const StTensorInfo& t : f.tensors()) {
      if (!CheckFinite(f, t).ok()) std::printf("UNEXPECTED: %s\n", t.name.c_str());
    }
  });
}

void Rank64Adapter() {
  constexpr int64_t kHidden = 768, kInter = 2048, kKv = 256, kLayers = 8, kRank = 64;
  const std::pair<int64_t, int64_t> dims[] = {{kHidden, kHidden}, {kKv, kHidden},   {kKv, kHidden},  {kHidden, kHidden},
                                              {kInter, kHidden},  {kInter, kHidden}, {kHidden, kInter}};
  for (StDType d : {StDType::kF32, StDType::kBF16}) {
    const int elem = StDTypeBits(d) / 8;
    std::vector<std::vector<std::byte>> keep;
    std::vector<StTensorToWrite> tensors;
    int64_t numel = 0;
    for (int64_t l = 0; l < kLayers; ++l) {
      for (int p = 0; p < 7; ++p) {
        const auto [out, in] = dims[p];
        for (const std::vector<int64_t>& shape : {std::vector<int64_t>{kRank, in}, std::vector<int64_t>{out, kRank}}) {
          keep.push_back(FiniteBytes(static_cast<size_t>(shape[0] * shape[1] * elem)));
          numel += shape[0] * shape[1];
          tensors.push_back({"base_model.model.model.layers." + std::to_string(l) + "." + std::to_string(p) +
                                 (shape[0] == kRank ? ".lora_A.weight" : ".lora_B.weight"),
                             d, shape,
                             std::string_view(reinterpret_cast<const char*>(keep.back().data()), keep.back().size())});
        }
      }
    }
    auto f = SafetensorsFile::FromBytes(SerializeSafetensors(tensors), "rank-64");
    if (!f.ok()) {
      std::printf("%s\n", std::string(f.status().message()).c_str());
      return;
    }
    const double s = CheckAll(**f);
    std::printf("rank-64 LoRA on all 7 projections of llama-100m, %s: %lld elements (%.1f MB), %.3f ms\n",
                std::string(StDTypeName(d)).c_str(), static_cast<long long>(numel), numel * elem / 1e6, s * 1e3);
  }
}

void File(const std::string& path) {
  auto f = SafetensorsFile::Open(path);
  if (!f.ok()) {
    std::printf("%s\n", std::string(f.status().message()).c_str());
    return;
  }
  volatile uint8_t sink = 0;  // fault every page in first
  for (const StTensorInfo& t : (*f)->tensors()) {
    const auto data = (*f)->Data(t);
    for (size_t i = 0; i < data.size(); i += 4096) sink ^= static_cast<uint8_t>(data[i]);
  }
  int64_t numel = 0;
  for (const StTensorInfo& t : (*f)->tensors()) numel += t.numel();
  const double s = CheckAll(**f);
  std::printf("%s: %zu tensors, %lld elements (%.1f MB), %.3f ms\n", path.c_str(), (*f)->tensors().size(),
              static_cast<long long>(numel), (*f)->size_bytes() / 1e6, s * 1e3);
}

}  // namespace
}  // namespace adapterd::model

int main(int argc, char** argv) {
  using namespace adapterd::model;  // NOLINT
  PerElement();
  Rank64Adapter();
  const std::string cache = (std::filesystem::temp_directory_path() / "adapterd-finite-bench").string();
  auto demo = EnsureDemoCheckpoint(cache);
  if (demo.ok()) {
    std::printf("demo base checkpoint: ");
    std::fflush(stdout);
    File(*demo + "/model.safetensors");
  }
  for (int i = 1; i < argc; ++i) File(argv[i]);
  return 0;
}
