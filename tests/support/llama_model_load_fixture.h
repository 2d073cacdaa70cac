// The demo checkpoint as the model-loading tests use it. A
// LlamaModelLoadFixture generates it once per test binary (each binary that
// includes this header has its own) and gives tests copies they may
// corrupt, rewritten weights, and a forward pass's logits. Header-only.
#ifndef ADAPTERD_TESTS_SUPPORT_LLAMA_MODEL_LOAD_FIXTURE_H_
#define ADAPTERD_TESTS_SUPPORT_LLAMA_MODEL_LOAD_FIXTURE_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/kv_cache.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"
#include "tests/support/test_env.h"

namespace adapterd::model {

namespace fs = std::filesystem;

inline std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void WriteAll(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  ASSERT_TRUE(out) << path;
}

inline std::string_view Bytes(std::span<const std::byte> s) {
  return std::string_view(reinterpret_cast<const char*>(s.data()), s.size());
}

inline std::string_view Bytes(const at::Tensor& t) {
  return std::string_view(static_cast<const char*>(t.data_ptr()), t.nbytes());
}

class LlamaModelLoadFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::string> dir =
        EnsureDemoCheckpoint(testing::MakeTempDir("demo-checkpoint-cache"));
    ASSERT_TRUE(dir.ok()) << dir.status();
    demo_dir_ = new std::string(*dir);
  }
  static void TearDownTestSuite() {
    delete demo_dir_;
    demo_dir_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(demo_dir_, nullptr) << "demo checkpoint was not generated"; }

  static const std::string& demo() { return *demo_dir_; }

  // A copy of the demo directory that the test may corrupt.
  static std::string CopyOfDemo(const std::string& name) {
    const std::string dir = testing::MakeTempDir(name);
    fs::copy(demo(), dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    return dir;
  }

  // Rewrites <dir>/model.safetensors from the demo tensors, letting `edit`
  // drop (return false) or replace (change `out`) each one. `keep` holds
  // buffers that `out.bytes` may point to.
  static absl::Status RewriteWeights(
      const std::string& dir,
      const std::function<bool(const StTensorInfo&, std::string_view, StTensorToWrite&,
                               std::vector<at::Tensor>&)>& edit) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> src =
        SafetensorsFile::Open((fs::path(demo()) / "model.safetensors").string());
    if (!src.ok()) return src.status();
    std::vector<StTensorToWrite> out;
    std::vector<at::Tensor> keep;
    for (const StTensorInfo& t : (*src)->tensors()) {
      StTensorToWrite w{t.name, t.dtype, t.shape, Bytes((*src)->Data(t))};
      if (edit(t, Bytes((*src)->Data(t)), w, keep)) out.push_back(w);
    }
    return WriteSafetensors((fs::path(dir) / "model.safetensors").string(), out,
                            {{"format", "pt"}});
  }

  static absl::StatusOr<at::Tensor> Logits(const LlamaModel& m,
                                           const std::vector<int64_t>& tokens) {
    absl::StatusOr<std::unique_ptr<KvCache>> kv =
        KvCache::Create(m.config(), 16, int64_t{64} << 20, at::kFloat, at::kCPU);
    if (!kv.ok()) return kv.status();
    const int64_t n = static_cast<int64_t>(tokens.size());
    std::vector<int32_t> blocks;
    if (!(*kv)->Reserve(blocks, n)) return absl::ResourceExhaustedError("kv reserve failed");
    ForwardBatch batch;
    batch.token_ids = tokens;
    batch.seqs.push_back(SequenceChunk{n, 0, &blocks, true});
    return m.Forward(batch, **kv);
  }

  static const std::vector<int64_t>& Prompt() {
    static const std::vector<int64_t> p = {1, 17, 523, 1999, 42, 7, 256, 1024, 3, 88, 2047};
    return p;
  }

  static inline std::string* demo_dir_ = nullptr;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_TESTS_SUPPORT_LLAMA_MODEL_LOAD_FIXTURE_H_
