// The fixed-shape decode step that CUDA graphs capture (DecodeGraphs, in
// mode kBuckets: the same step, run eagerly) against the model's ordinary
// step: over several decode steps whose row counts and adapters change,
// rows padded to their bucket give each real row the logits and the KV
// cache contents of the ordinary step, with LoRA deltas through the SGMV
// kernels' fixed tables (their host version), buckets are made once and
// reused when the adapters change, and batches the fixed tables cannot
// carry take the ordinary step.
#include "server/model/decode_graphs.h"

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "adapters/adapter_files.h"
#include "adapters/adapter_loader.h"
#include "gtest/gtest.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/kv_cache.h"
#include "server/model/llama_model.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/test_env.h"

namespace adapterd::model {
namespace {

std::shared_ptr<const AdapterWeights> Load(const LlamaModel& base, const testing::FakeAdapter& fake) {
  absl::StatusOr<adapters::AdapterFiles> files = adapters::AdapterFilesFromUpload(fake.Files());
  EXPECT_TRUE(files.ok()) << files.status();
  if (!files.ok()) return nullptr;
  absl::StatusOr<adapters::LoadedAdapter> loaded = adapters::LoadAdapter(*files, base);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return loaded.ok() ? loaded->weights : nullptr;
}

std::unique_ptr<LlamaModel> Model(const std::string& dir, at::ScalarType dtype, DecodeSteps steps) {
  ModelOptions options;
  options.dtype = dtype;
  options.decode_steps = steps;
  options.delta_backend = DeltaBackendKind::kSgmv;
  absl::StatusOr<std::unique_ptr<LlamaModel>> m = LlamaModel::Load(dir, options);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : nullptr;
}

std::unique_ptr<KvCache> Cache(const LlamaModel& m, at::ScalarType dtype) {
  absl::StatusOr<std::unique_ptr<KvCache>> kv = KvCache::Create(m.config(), 16, int64_t{16} << 20, dtype, at::kCPU);
  EXPECT_TRUE(kv.ok()) << kv.status();
  return kv.ok() ? *std::move(kv) : nullptr;
}

double MaxRelative(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kFloat), w = want.to(at::kFloat);
  return (g - w).abs().max().item<double>() / std::max(w.abs().max().item<double>(), 1e-12);
}

struct Sequence {
  std::vector<int64_t> prompt;
  std::vector<int32_t> table;
  int64_t length = 0;  // tokens in the cache
};

// A step of one decoded token for each of `which`, through `adapters`
// (one per row, null = base), on both models; checks the logits.
void Step(const std::vector<LlamaModel*>& models, const std::vector<KvCache*>& caches,
          std::vector<std::vector<Sequence>>& seqs, const std::vector<size_t>& which,
          const std::vector<const AdapterWeights*>& adapters, double tolerance, const std::string& what) {
  std::vector<at::Tensor> logits;
  for (size_t m = 0; m < models.size(); ++m) {
    ForwardBatch batch;
    for (size_t i : which) {
      Sequence& s = seqs[m][i];
      batch.token_ids.push_back(static_cast<int64_t>((s.length * 37 + static_cast<int64_t>(i) * 11) % 2000 + 3));
      batch.seqs.push_back(SequenceChunk{1, s.length, &s.table, true});
    }
    batch.adapters = adapters;
    absl::StatusOr<at::Tensor> out = models[m]->Forward(batch, *caches[m]);
    ASSERT_TRUE(out.ok()) << what << ": " << out.status();
    ASSERT_EQ(out->size(0), static_cast<int64_t>(which.size())) << what;
    logits.push_back(*out);
    for (size_t i : which) ++seqs[m][i].length;
  }
  EXPECT_LE(MaxRelative(logits[1], logits[0]), tolerance) << what;
}

void Check(at::ScalarType dtype, double tolerance) {
  absl::StatusOr<std::string> dir = EnsureDemoCheckpoint(testing::MakeTempDir("decode-graphs"));
  ASSERT_TRUE(dir.ok()) << dir.status();
  std::unique_ptr<LlamaModel> eager = Model(*dir, dtype, DecodeSteps::kEager);
  std::unique_ptr<LlamaModel> fixed = Model(*dir, dtype, DecodeSteps::kBuckets);
  ASSERT_TRUE(eager && fixed);
  ASSERT_EQ(eager->decode_graphs(), nullptr);
  ASSERT_NE(fixed->decode_graphs(), nullptr);
  testing::LoraSpec all;
  all.r = 8;
  all.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  all.seed = 3;
  const auto a = Load(*eager, testing::QvLora(1)), b = Load(*eager, testing::DemoLora(all));
  testing::LoraSpec too_wide = all;
  too_wide.r = 300;  // above the kernels' largest rank: the fixed tables cannot carry it
  too_wide.seed = 5;
  const auto wide = Load(*eager, testing::DemoLora(too_wide));
  ASSERT_TRUE(a && b && wide);

  std::unique_ptr<KvCache> kv_eager = Cache(*eager, dtype), kv_fixed = Cache(*fixed, dtype);
  ASSERT_TRUE(kv_eager && kv_fixed);
  const std::vector<LlamaModel*> models = {eager.get(), fixed.get()};
  const std::vector<KvCache*> caches = {kv_eager.get(), kv_fixed.get()};
  const std::vector<std::vector<int64_t>> prompts = {
      {1, 17, 523, 1999, 42, 7, 256, 1024, 3, 88, 2047}, {1, 5, 9, 300, 77}, {1, 900, 901, 902, 903, 904, 905},
      {1, 2, 3}, {1, 600, 601, 602, 603, 604, 605, 606, 607, 608, 609, 610, 611, 612, 613, 614, 615, 616, 617}};
  std::vector<std::vector<Sequence>> seqs(2, std::vector<Sequence>(prompts.size()));
  for (size_t m = 0; m < 2; ++m) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      Sequence& s = seqs[m][i];
      ASSERT_TRUE(caches[m]->Reserve(s.table, 64));
      ForwardBatch prefill;
      prefill.token_ids = prompts[i];
      s.length = static_cast<int64_t>(prompts[i].size());
      prefill.seqs.push_back(SequenceChunk{s.length, 0, &s.table, true});
      ASSERT_TRUE(models[m]->Forward(prefill, *caches[m]).ok());
    }
  }
  const DecodeGraphs& graphs = *fixed->decode_graphs();
  EXPECT_EQ(graphs.stats().eager, 0) << "prefill chunks take the ordinary step";
  // 3 rows (bucket 4, padded with the last row), two adapters and the base.
  Step(models, caches, seqs, {0, 1, 2}, {a.get(), nullptr, b.get()}, tolerance, "3 rows");
  // The same bucket, other adapters: no new bucket.
  Step(models, caches, seqs, {2, 0, 4}, {b.get(), b.get(), a.get()}, tolerance, "3 rows, other adapters");
  EXPECT_EQ(graphs.stats().buckets, 1);
  // 5 rows (bucket 8), then 1 row of the base (bucket 1, no tables).
  Step(models, caches, seqs, {0, 1, 2, 3, 4}, {nullptr, a.get(), a.get(), b.get(), nullptr}, tolerance, "5 rows");
  Step(models, caches, seqs, {3}, {}, tolerance, "1 base row");
  EXPECT_EQ(graphs.stats().buckets, 3);
  EXPECT_EQ(graphs.stats().eager, 4);
  // An adapter the tables cannot carry: the ordinary step.
  Step(models, caches, seqs, {1, 2}, {wide.get(), a.get()}, tolerance, "an adapter of rank 300");
  EXPECT_EQ(graphs.stats().eager, 4);
  EXPECT_EQ(graphs.stats().buckets, 3);
  // Every row's keys and values, and nothing else, were written as the
  // ordinary step writes them (padding rows repeat the last row).
  for (int64_t l = 0; l < eager->config().num_layers; ++l) {
    EXPECT_LE(MaxRelative(kv_fixed->k(l), kv_eager->k(l)), tolerance) << "keys of layer " << l;
    EXPECT_LE(MaxRelative(kv_fixed->v(l), kv_eager->v(l)), tolerance) << "values of layer " << l;
  }
}

TEST(DecodeGraphsTest, FixedShapeStepsMatchTheOrdinaryStepInFloat32) { Check(at::kFloat, 1e-5); }

TEST(DecodeGraphsTest, FixedShapeStepsMatchTheOrdinaryStepInBfloat16) { Check(at::kBFloat16, 2e-2); }

TEST(DecodeGraphsTest, Buckets) {
  EXPECT_EQ(DecodeGraphs::RowBucket(1), 1);
  EXPECT_EQ(DecodeGraphs::RowBucket(3), 4);
  EXPECT_EQ(DecodeGraphs::RowBucket(64), 64);
  EXPECT_EQ(DecodeGraphs::RowBucket(65), 128);
  EXPECT_EQ(DecodeGraphs::ContextBucket(1), DecodeGraphs::kMinContext);
  EXPECT_EQ(DecodeGraphs::ContextBucket(65), 128);
  EXPECT_EQ(DecodeGraphs::ContextBucket(4096), 4096);
}

TEST(DecodeGraphsTest, GraphsNeedACudaDevice) {
  absl::StatusOr<std::string> dir = EnsureDemoCheckpoint(testing::MakeTempDir("decode-graphs-cpu"));
  ASSERT_TRUE(dir.ok()) << dir.status();
  ModelOptions options;
  options.decode_steps = DecodeSteps::kGraphs;
  absl::StatusOr<std::unique_ptr<LlamaModel>> m = LlamaModel::Load(*dir, options);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(m.status().message().find("CUDA graphs"), std::string::npos) << m.status();
  options.decode_steps = DecodeSteps::kAuto;
  m = LlamaModel::Load(*dir, options);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->options().decode_steps, DecodeSteps::kEager);
  EXPECT_EQ((*m)->decode_graphs(), nullptr);
}

}  // namespace
}  // namespace adapterd::model
