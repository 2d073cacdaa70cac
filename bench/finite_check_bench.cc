// What the load-time NaN/Inf check (server/model/finite_check.h) costs:
// nanoseconds per element for each dtype, in cache and streaming from
// memory; milliseconds for a rank-64 LoRA on all seven projections of the
// ~100M bench model (hidden 768, intermediate 2048, 8 layers, 4 KV heads of
// 64) and of the demo model, in F32 and BF16, beside the whole LoadAdapter
// of the latter; and milliseconds for the demo base checkpoint and for any
// checkpoint directories named on the command line (read once first, as the
// server's Prefault does). Each figure is the minimum of several runs.
//
//   ./x run "build/bench/adapterd_finite_check_bench [checkpoint-dir ...]"
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "adapters/adapter_files.h"
#include "adapters/adapter_loader.h"
#include "server/model/adapter_weights.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/finite_check.h"
#include "server/model/llama_model.h"
#include "server/model/model_config.h"
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

// A rank-64 LoRA on all seven projections of a base of these dimensions, in `dtype`.
std::string Rank64Lora(const ModelConfig& c, StDType dtype, int64_t* numel) {
  constexpr int64_t kRank = 64;
  const int64_t h = c.hidden_size, inter = c.intermediate_size, kv = c.num_kv_heads * c.head_dim,
                q = c.num_heads * c.head_dim;
  const std::pair<int64_t, int64_t> dims[] = {{q, h}, {kv, h}, {kv, h}, {h, q}, {inter, h}, {inter, h}, {h, inter}};
  const int elem = StDTypeBits(dtype) / 8;
  std::vector<std::vector<std::byte>> keep;
  std::vector<StTensorToWrite> tensors;
  *numel = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int p = 0; p < kNumProj; ++p) {
      const auto [out, in] = dims[p];
      const std::string key = "base_model.model.model.layers." + std::to_string(l) + "." +
                              std::string(ProjPath(static_cast<Proj>(p)));
      for (const auto& [kind, shape] : {std::pair{".lora_A.weight", std::vector<int64_t>{kRank, in}},
                                        std::pair{".lora_B.weight", std::vector<int64_t>{out, kRank}}}) {
        keep.push_back(FiniteBytes(static_cast<size_t>(shape[0] * shape[1] * elem)));
        *numel += shape[0] * shape[1];
        tensors.push_back({key + kind, dtype, shape,
                           std::string_view(reinterpret_cast<const char*>(keep.back().data()), keep.back().size())});
      }
    }
  }
  return SerializeSafetensors(tensors);
}

// The check on a rank-64 adapter for `c`, and, with a base, the whole load of it.
void Rank64Adapter(const std::string& name, const ModelConfig& c, const LlamaModel* base) {
  for (StDType d : {StDType::kF32, StDType::kBF16}) {
    int64_t numel = 0;
    const std::string bytes = Rank64Lora(c, d, &numel);
    auto f = SafetensorsFile::FromBytes(bytes, "rank-64");
    if (!f.ok()) {
      std::printf("%s\n", std::string(f.status().message()).c_str());
      return;
    }
    std::printf("rank-64 LoRA on all 7 projections of %s, %s: %lld elements (%.1f MB): check %.3f ms",
                name.c_str(), std::string(StDTypeName(d)).c_str(), static_cast<long long>(numel),
                bytes.size() / 1e6, CheckAll(**f) * 1e3);
    if (base != nullptr) {
      const std::string config = R"({"peft_type": "LORA", "r": 64, "lora_alpha": 128, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]})";
      auto files = adapters::AdapterFilesFromUpload({{adapters::kConfigFile, config}, {adapters::kWeightsFile, bytes}});
      bool ok = files.ok();
      const double load = MinSeconds(kRuns, [&] { ok = ok && adapters::LoadAdapter(*files, *base).ok(); });
      std::printf(", whole LoadAdapter %.3f ms%s", load * 1e3, ok ? "" : " (FAILED)");
    }
    std::printf("\n");
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
  ModelConfig m100;  // bench/common.py's MODEL_100M
  m100.hidden_size = 768;
  m100.intermediate_size = 2048;
  m100.num_layers = 8;
  m100.num_heads = 12;
  m100.num_kv_heads = 4;
  m100.head_dim = 64;
  Rank64Adapter("llama-100m", m100, nullptr);
  auto demo = EnsureDemoCheckpoint((std::filesystem::temp_directory_path() / "adapterd-finite-bench").string());
  if (!demo.ok()) return 1;
  std::printf("demo base checkpoint: ");
  File(*demo + "/model.safetensors");
  auto model = LlamaModel::Load(*demo, {});
  if (model.ok()) Rank64Adapter("the demo model", (*model)->config(), model->get());
  // Optional: a checkpoint directory (model.safetensors) to time too.
  for (int i = 1; i < argc; ++i) {
    File(std::string(argv[i]) + "/model.safetensors");
    const auto start = std::chrono::steady_clock::now();
    auto other = LlamaModel::Load(argv[i], {});
    std::printf("LlamaModel::Load(%s), which includes the check: %.1f ms\n", argv[i],
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() * 1e3);
    if (other.ok()) Rank64Adapter(argv[i], (*other)->config(), other->get());
  }
  return 0;
}
