// Conformance of the base model with Hugging Face transformers, computed live:
// hf_reference.py builds tiny random checkpoints and runs them in
// transformers; adapterd loads the same files and must agree on logits
// (max abs diff 1e-4, fp32) and on 32 greedy tokens.
#include <ATen/ATen.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "server/engine/engine.h"
#include "server/model/kv_cache.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"
#include "tests/support/reference_outputs.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd {
namespace {

constexpr double kLogitTolerance = 1e-4;
constexpr int kNewTokens = 32;

// Prompts of several lengths, deterministic, within a 256-token vocabulary.
std::vector<std::vector<int64_t>> Prompts() {
  std::vector<std::vector<int64_t>> prompts;
  for (int len : {1, 6, 19, 45}) {
    std::vector<int64_t> p;
    for (int i = 0; i < len; ++i) p.push_back((len * 31 + i * 17 + 7) % 250);
    prompts.push_back(p);
  }
  return prompts;
}

at::Tensor ReadTensor(const model::SafetensorsFile& f, const std::string& name) {
  return testing::ReadReference(f, name);
}

using testing::CollectingSink;

struct Case {
  std::string name;
  std::string make_args;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name << " (" << c.make_args << ")"; }

class BaseModelConformanceTest : public ::testing::TestWithParam<Case> {};

TEST_P(BaseModelConformanceTest, MatchesTransformers) {
  ADAPTERD_REQUIRE_REFERENCE();
  const Case& c = GetParam();
  const std::string dir = testing::MakeTempDir(c.name);
  const std::string model_dir = dir + "/model";
  auto made = testing::RunReference(absl::StrCat("make-model --out ", model_dir, " ", c.make_args));
  ASSERT_TRUE(made.ok()) << made.status();
  testing::WritePrompts(dir + "/prompts.json", Prompts());
  auto ref_run = testing::RunReference(absl::StrCat("reference --model ", model_dir, " --prompts ",
                                                    dir, "/prompts.json --out ", dir,
                                                    "/ref.safetensors --new-tokens ", kNewTokens));
  ASSERT_TRUE(ref_run.ok()) << ref_run.status();
  auto ref = model::SafetensorsFile::Open(dir + "/ref.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();

  auto loaded = model::LlamaModel::Load(model_dir, {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const model::LlamaModel& m = **loaded;
  auto kv = model::KvCache::Create(m.config(), 16, 64 << 20, at::kFloat, at::kCPU);
  ASSERT_TRUE(kv.ok()) << kv.status();

  const auto prompts = Prompts();
  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE(absl::StrCat(c.name, " prompt ", i, " (length ", prompts[i].size(), ")"));
    const std::string r = absl::StrCat("r", i, ".");
    at::Tensor want_last = ReadTensor(**ref, r + "last_logits");
    at::Tensor want_steps = ReadTensor(**ref, r + "step_logits");
    at::Tensor greedy = ReadTensor(**ref, r + "greedy");
    ASSERT_EQ(greedy.size(0), kNewTokens);

    // 1. The whole prompt in one chunk.
    std::vector<int32_t> blocks;
    ASSERT_TRUE((*kv)->Reserve(blocks, static_cast<int64_t>(prompts[i].size()) + kNewTokens));
    model::ForwardBatch batch;
    batch.token_ids = prompts[i];
    batch.seqs.push_back({static_cast<int64_t>(prompts[i].size()), 0, &blocks, true});
    auto logits = m.Forward(batch, **kv);
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_LE((logits->select(0, 0) - want_last).abs().max().item<double>(), kLogitTolerance);

    // 2. Incremental decoding along the reference's greedy path: every step's
    //    logits match transformers' generate() scores.
    int64_t ctx = static_cast<int64_t>(prompts[i].size());
    for (int step = 1; step < kNewTokens; ++step) {
      model::ForwardBatch d;
      d.token_ids = {greedy[step - 1].item<int64_t>()};
      d.seqs.push_back({1, ctx, &blocks, true});
      auto l = m.Forward(d, **kv);
      ASSERT_TRUE(l.ok()) << l.status();
      ++ctx;
      EXPECT_LE((l->select(0, 0) - want_steps[step]).abs().max().item<double>(), kLogitTolerance)
          << "decode step " << step;
    }
    (*kv)->Free(blocks);

    // 3. The prompt split into two chunks (prefill after cached context).
    if (prompts[i].size() > 2) {
      const int64_t half = static_cast<int64_t>(prompts[i].size()) / 2;
      ASSERT_TRUE((*kv)->Reserve(blocks, static_cast<int64_t>(prompts[i].size())));
      model::ForwardBatch first, second;
      first.token_ids.assign(prompts[i].begin(), prompts[i].begin() + half);
      first.seqs.push_back({half, 0, &blocks, false});
      second.token_ids.assign(prompts[i].begin() + half, prompts[i].end());
      second.seqs.push_back({static_cast<int64_t>(second.token_ids.size()), half, &blocks, true});
      ASSERT_TRUE(m.Forward(first, **kv).ok());
      auto l = m.Forward(second, **kv);
      ASSERT_TRUE(l.ok()) << l.status();
      EXPECT_LE((l->select(0, 0) - want_last).abs().max().item<double>(), kLogitTolerance);
      (*kv)->Free(blocks);
    }
  }

  // 4. Greedy generation through the engine, all prompts batched together.
  auto reloaded = model::LlamaModel::Load(model_dir, {});
  ASSERT_TRUE(reloaded.ok());
  engine::EngineOptions opts;
  opts.max_tokens_per_step = 32;  // forces chunked prefill mixed with decoding
  opts.kv_cache_bytes = 64 << 20;
  auto eng = engine::Engine::Create(*std::move(reloaded), opts, nullptr);
  ASSERT_TRUE(eng.ok()) << eng.status();
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const auto& prompt : prompts) {
    engine::GenerationRequest req;
    req.id = "conformance";
    req.prompt = prompt;
    req.sampling.max_new_tokens = kNewTokens;
    req.sampling.ignore_eos = true;
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE((*eng)->Submit(req, sinks.back()).ok());
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_TRUE(testing::Await(sinks[i]->done, "sinks[i]->done"));
    at::Tensor greedy = ReadTensor(**ref, absl::StrCat("r", i, ".greedy"));
    std::vector<int64_t> want(greedy.data_ptr<int64_t>(), greedy.data_ptr<int64_t>() + greedy.numel());
    EXPECT_EQ(sinks[i]->tokens, want) << c.name << " prompt " << i;
    EXPECT_EQ(sinks[i]->finish.reason, engine::FinishReason::kLength);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Checkpoints, BaseModelConformanceTest,
    ::testing::Values(Case{"llama", "--arch llama --seed 1"},
                      Case{"llama_tied", "--arch llama --seed 2 --tie-embeddings"},
                      Case{"llama3_rope", "--arch llama3rope --seed 3"},
                      Case{"llama_sharded", "--arch llama --seed 4 --shard-size 20KB"},
                      Case{"qwen2", "--arch qwen2 --seed 5"}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace adapterd
