// A step's prompt chunks keep OpenBLAS out of ATen's parallel regions: with
// OpenBLAS's jobs on ATen's pool (SetComputeThreads), the blocked attention
// kernel's GEMMs, which it issues inside its parallel region, run on their
// calling threads (ScopedSerialBlas) instead of taking turns on threads of
// their own, and the logits are those of the same forward computed with
// OpenBLAS on one thread.
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/common/compute_threads.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/kv_cache.h"
#include "server/model/llama_model.h"
#include "tests/support/test_env.h"

namespace adapterd::model {
namespace {

// The logits of one forward: a 600-token prompt chunk after 300 cached
// positions (so the blocked kernel splits keys into blocks and queries into
// several), beside one decode row.
at::Tensor Forward(const LlamaModel& base) {
  absl::StatusOr<std::unique_ptr<KvCache>> kv =
      KvCache::Create(base.config(), 16, int64_t{64} << 20, at::kFloat, at::kCPU);
  EXPECT_TRUE(kv.ok()) << kv.status();
  if (!kv.ok()) return {};
  std::vector<int32_t> long_table, short_table;
  EXPECT_TRUE((*kv)->Reserve(long_table, 900));
  EXPECT_TRUE((*kv)->Reserve(short_table, 9));
  std::vector<int64_t> ids(900), first(8);
  for (int64_t i = 0; i < 900; ++i) ids[i] = (i * 37 + 11) % base.config().vocab_size;
  for (int64_t i = 0; i < 8; ++i) first[i] = (i * 53 + 5) % base.config().vocab_size;
  ForwardBatch warm;
  warm.token_ids.assign(ids.begin(), ids.begin() + 300);
  warm.token_ids.insert(warm.token_ids.end(), first.begin(), first.end());
  warm.seqs = {SequenceChunk{300, 0, &long_table, false}, SequenceChunk{8, 0, &short_table, false}};
  EXPECT_TRUE(base.Forward(warm, **kv).ok());
  ForwardBatch step;
  step.token_ids.assign(ids.begin() + 300, ids.end());
  step.token_ids.push_back(7);
  step.seqs = {SequenceChunk{600, 300, &long_table, true}, SequenceChunk{1, 8, &short_table, true}};
  absl::StatusOr<at::Tensor> logits = base.Forward(step, **kv);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? *logits : at::Tensor();
}

TEST(SerialBlasTest, PromptChunksKeepOpenBlasOutOfParallelRegions) {
  absl::StatusOr<std::string> dir = EnsureDemoCheckpoint(testing::MakeTempDir("serial-blas"));
  ASSERT_TRUE(dir.ok()) << dir.status();
  // Without packed weights, whose products go to oneDNN: the projections
  // must run through OpenBLAS for this test to watch them.
  ModelOptions options;
  options.prepack_weights = false;
  absl::StatusOr<std::unique_ptr<LlamaModel>> m = LlamaModel::Load(*dir, options);
  ASSERT_TRUE(m.ok()) << m.status();
  at::Tensor want;
  {
    ScopedComputeThreads one(1);
    want = Forward(**m);
  }
  SetComputeThreads(2);
#ifdef ADAPTERD_SERIAL_KERNELS
  GTEST_SKIP() << "clang builds run without OpenMP (server/common/parallel.h)";
#endif
  ASSERT_TRUE(BlasRunsOnAtenPool());
  const int64_t parallel = BlasParallelCalls(), nested = BlasCallsInParallelRegions();
  const at::Tensor got = Forward(**m);
  ASSERT_TRUE(got.defined() && want.defined());
  EXPECT_GT(BlasParallelCalls(), parallel) << "the projections did not run as OpenBLAS jobs on the pool";
  EXPECT_EQ(BlasCallsInParallelRegions(), nested) << "a GEMM inside a parallel region took the slow path";
  const double scale = want.abs().max().item<double>();
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-4 * scale);
}

}  // namespace
}  // namespace adapterd::model
