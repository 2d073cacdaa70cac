#include "tests/support/demo_model.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/kv_cache.h"
#include "tests/support/test_env.h"

namespace adapterd::testing {

absl::StatusOr<std::unique_ptr<model::LlamaModel>> LoadDemoModel() {
  absl::StatusOr<std::string> dir = model::EnsureDemoCheckpoint(MakeTempDir("demo-cache"));
  if (!dir.ok()) return dir.status();
  return model::LlamaModel::Load(*dir, {});
}

at::Tensor PromptLogits(const model::LlamaModel& base, const model::AdapterWeights* adapter) {
  static const std::vector<int64_t> prompt = {1, 17, 523, 1999, 42, 7, 256, 1024, 3, 88, 2047};
  return PromptLogits(base, adapter, prompt);
}

at::Tensor PromptLogits(const model::LlamaModel& base, const model::AdapterWeights* adapter,
                        std::span<const int64_t> prompt) {
  absl::StatusOr<std::unique_ptr<model::KvCache>> kv =
      model::KvCache::Create(base.config(), 16, int64_t{32} << 20, base.options().dtype, at::kCPU);
  EXPECT_TRUE(kv.ok()) << kv.status();
  if (!kv.ok()) return at::Tensor();
  const int64_t n = static_cast<int64_t>(prompt.size());
  std::vector<int32_t> blocks;
  EXPECT_TRUE((*kv)->Reserve(blocks, n));
  model::ForwardBatch batch;
  batch.token_ids.assign(prompt.begin(), prompt.end());
  batch.seqs.push_back(model::SequenceChunk{n, 0, &blocks, true});
  if (adapter != nullptr) batch.adapters = {adapter};
  absl::StatusOr<at::Tensor> logits = base.Forward(batch, **kv);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? *logits : at::Tensor();
}

double MaxDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

model::LlamaModel* DemoModelTest::base_ = nullptr;

void DemoModelTest::SetUpTestSuite() {
  absl::StatusOr<std::unique_ptr<model::LlamaModel>> m = LoadDemoModel();
  ASSERT_TRUE(m.ok()) << m.status();
  base_ = m->release();
}

void DemoModelTest::TearDownTestSuite() {
  delete base_;
  base_ = nullptr;
}

void DemoModelTest::SetUp() { ASSERT_NE(base_, nullptr) << "the demo base model did not load"; }

}  // namespace adapterd::testing
