// The decode path against the prompt path, inside the model: a step of
// single-token rows (paged attention over the cache's blocks, LoRA deltas
// row by row) gives each row the logits that prefilling its whole sequence
// at once through SDPA gives (a model with in_place_prompt_positions = 0,
// LoRA through matrix products), for rows of two adapters and of the base in
// one step, in float32 and bfloat16; and so does the batched gathered decode
// attention of other devices. The prompts before that step are prefilled
// with the default options: the short ones attend in place, token by token
// as decode rows, and the 50-token one through SDPA.
#include <ATen/ATen.h>

#include <map>
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

std::vector<int64_t> Counting(int64_t first, int64_t n) {
  std::vector<int64_t> ids = {1};
  for (int64_t i = 0; i + 1 < n; ++i) ids.push_back(first + 37 * i % 1100);  // below the demo vocabulary of 2048
  return ids;
}

const std::vector<std::vector<int64_t>> kPrompts = {
    {1, 17, 523, 1999, 42, 7, 256, 1024, 3, 88, 2047}, {1, 5, 9, 300, 77}, Counting(900, 50)};
constexpr int64_t kNext = 5;

std::shared_ptr<const AdapterWeights> Lora(const LlamaModel& base, uint32_t seed) {
  absl::StatusOr<adapters::AdapterFiles> files = adapters::AdapterFilesFromUpload(testing::QvLora(seed).Files());
  EXPECT_TRUE(files.ok()) << files.status();
  if (!files.ok()) return nullptr;
  absl::StatusOr<adapters::LoadedAdapter> loaded = adapters::LoadAdapter(*files, base);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return loaded.ok() ? loaded->weights : nullptr;
}

std::unique_ptr<KvCache> Cache(const LlamaModel& m, at::ScalarType dtype) {
  absl::StatusOr<std::unique_ptr<KvCache>> kv = KvCache::Create(m.config(), 16, int64_t{32} << 20, dtype, at::kCPU);
  EXPECT_TRUE(kv.ok()) << kv.status();
  return kv.ok() ? *std::move(kv) : nullptr;
}

void Check(at::ScalarType dtype, double relative, DecodeAttention attention = DecodeAttention::kAuto) {
  absl::StatusOr<std::string> dir = EnsureDemoCheckpoint(testing::MakeTempDir("decode-path"));
  ASSERT_TRUE(dir.ok()) << dir.status();
  ModelOptions options;
  options.dtype = dtype;
  options.decode_attention = attention;
  absl::StatusOr<std::unique_ptr<LlamaModel>> m = LlamaModel::Load(*dir, options);
  ASSERT_TRUE(m.ok()) << m.status();
  const LlamaModel& base = **m;
  options.in_place_prompt_positions = 0;
  absl::StatusOr<std::unique_ptr<LlamaModel>> sdpa = LlamaModel::Load(*dir, options);
  ASSERT_TRUE(sdpa.ok()) << sdpa.status();
  const auto a = Lora(base, 1), b = Lora(base, 2);
  ASSERT_TRUE(a && b);
  const std::vector<const AdapterWeights*> adapters = {a.get(), nullptr, b.get()};
  // Prefill every prompt, then one step of three decode rows.
  std::unique_ptr<KvCache> kv = Cache(base, dtype);
  ASSERT_TRUE(kv);
  std::vector<std::vector<int32_t>> tables(kPrompts.size());
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    const int64_t n = static_cast<int64_t>(kPrompts[i].size());
    ASSERT_TRUE(kv->Reserve(tables[i], n + 1));
    ForwardBatch prefill;
    prefill.token_ids = kPrompts[i];
    prefill.seqs.push_back(SequenceChunk{n, 0, &tables[i], true});
    prefill.adapters = {adapters[i]};
    const absl::StatusOr<at::Tensor> prefilled = base.Forward(prefill, *kv);
    ASSERT_TRUE(prefilled.ok()) << prefilled.status();
  }
  ForwardBatch decode;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    decode.token_ids.push_back(kNext);
    decode.seqs.push_back(SequenceChunk{1, static_cast<int64_t>(kPrompts[i].size()), &tables[i], true});
  }
  decode.adapters = adapters;
  absl::StatusOr<at::Tensor> got = base.Forward(decode, *kv);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    std::unique_ptr<KvCache> fresh = Cache(base, dtype);
    std::vector<int32_t> table;
    std::vector<int64_t> whole = kPrompts[i];
    whole.push_back(kNext);
    const int64_t n = static_cast<int64_t>(whole.size());
    ASSERT_TRUE(fresh->Reserve(table, n));
    ForwardBatch once;
    once.token_ids = whole;
    once.seqs.push_back(SequenceChunk{n, 0, &table, true});
    once.adapters = {adapters[i]};
    absl::StatusOr<at::Tensor> want = (*sdpa)->Forward(once, *fresh);
    ASSERT_TRUE(want.ok()) << want.status();
    const at::Tensor w = want->select(0, 0).to(at::kFloat), g = got->select(0, static_cast<int64_t>(i)).to(at::kFloat);
    const double diff = (g - w).abs().max().item<double>(), scale = w.abs().max().item<double>();
    EXPECT_LE(diff, relative * scale) << "row " << i << " (" << (adapters[i] ? "adapter" : "base") << "), "
                                      << at::toString(dtype) << ": max diff " << diff << " of " << scale;
  }
}

TEST(DecodePathTest, DecodeRowsMatchWholeSequencePrefillInFloat32) { Check(at::kFloat, 1e-5); }

TEST(DecodePathTest, DecodeRowsMatchWholeSequencePrefillInBfloat16) { Check(at::kBFloat16, 2e-2); }

// The gathered path, the one devices without the in-place kernel take.
TEST(DecodePathTest, GatheredDecodeRowsMatchWholeSequencePrefillInFloat32) {
  Check(at::kFloat, 1e-5, DecodeAttention::kGathered);
}

TEST(DecodePathTest, GatheredDecodeRowsMatchWholeSequencePrefillInBfloat16) {
  Check(at::kBFloat16, 2e-2, DecodeAttention::kGathered);
}

}  // namespace
}  // namespace adapterd::model
