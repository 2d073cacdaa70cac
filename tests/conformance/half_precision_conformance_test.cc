// Conformance of the base model in bfloat16 and float16 with Hugging Face
// transformers run in the same dtype, computed live: hf_reference.py builds
// tiny random checkpoints stored in that dtype and runs them in
// transformers; adapterd loads the same files in the same dtype.
//
// - Logits, of a whole prompt and of every decode step along transformers'
//   greedy path, agree within kRelTolerance relative (max abs difference
//   over the reference's max abs logit).
// - Greedy tokens through the engine (all prompts batched, chunked
//   prefill) equal transformers' up to the first step whose top-2 logit gap
//   in the reference is below that tolerance (relative the same way); after
//   such a step the two may take different, equally valid, paths.
#include <ATen/ATen.h>

#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

constexpr double kRelTolerance = 2e-2;
constexpr int kNewTokens = 24;
// The greedy comparison must compare this many tokens over all prompts
// before the first near-tie, or the test fails as unable to check.
constexpr int64_t kMinComparedTokens = 16;

std::vector<std::vector<int64_t>> Prompts() {
  std::vector<std::vector<int64_t>> prompts;
  for (int len : {1, 3, 7, 12, 23, 30, 41, 50}) {
    std::vector<int64_t> p;
    for (int i = 0; i < len; ++i) p.push_back((len * 29 + i * 13 + 5) % 250);
    prompts.push_back(p);
  }
  return prompts;
}

double Relative(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kFloat) - want).abs().max().item<double>() / want.abs().max().item<double>();
}

// The first step of `step_logits` [steps, vocab] whose top-2 gap is below
// the tolerance; `steps` when there is none.
int64_t FirstNearTie(const at::Tensor& step_logits) {
  const at::Tensor top = std::get<0>(step_logits.topk(2, -1));
  for (int64_t s = 0; s < step_logits.size(0); ++s) {
    const double gap = (top[s][0] - top[s][1]).item<double>();
    if (gap < kRelTolerance * step_logits[s].abs().max().item<double>()) return s;
  }
  return step_logits.size(0);
}

struct Case {
  std::string name;
  std::string make_args;
  std::string dtype;  // hf_reference.py's name
  c10::ScalarType scalar_type;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class HalfPrecisionConformanceTest : public ::testing::TestWithParam<Case> {};

TEST_P(HalfPrecisionConformanceTest, MatchesTransformersInTheSameDtype) {
  ADAPTERD_REQUIRE_REFERENCE();
  const Case& c = GetParam();
  const std::string dir = testing::MakeTempDir(c.name);
  const std::string model_dir = dir + "/model";
  auto made = testing::RunReference(absl::StrCat("make-model --out ", model_dir, " ", c.make_args, " --dtype ", c.dtype));
  ASSERT_TRUE(made.ok()) << made.status();
  testing::WritePrompts(dir + "/prompts.json", Prompts());
  auto ref_run = testing::RunReference(absl::StrCat("reference --model ", model_dir, " --prompts ", dir,
                                                    "/prompts.json --out ", dir, "/ref.safetensors --new-tokens ",
                                                    kNewTokens, " --dtype ", c.dtype));
  ASSERT_TRUE(ref_run.ok()) << ref_run.status();
  auto ref = model::SafetensorsFile::Open(dir + "/ref.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();

  model::ModelOptions options;
  options.dtype = c.scalar_type;
  auto loaded = model::LlamaModel::Load(model_dir, options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const model::LlamaModel& m = **loaded;
  auto kv = model::KvCache::Create(m.config(), 16, 64 << 20, c.scalar_type, at::kCPU);
  ASSERT_TRUE(kv.ok()) << kv.status();

  const auto prompts = Prompts();
  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE(absl::StrCat(c.name, " prompt ", i, " (length ", prompts[i].size(), ")"));
    const std::string r = absl::StrCat("r", i, ".");
    at::Tensor want_last = testing::ReadReference(**ref, r + "last_logits");
    at::Tensor want_steps = testing::ReadReference(**ref, r + "step_logits");
    at::Tensor greedy = testing::ReadReference(**ref, r + "greedy");

    std::vector<int32_t> blocks;
    ASSERT_TRUE((*kv)->Reserve(blocks, static_cast<int64_t>(prompts[i].size()) + kNewTokens));
    model::ForwardBatch batch;
    batch.token_ids = prompts[i];
    batch.seqs.push_back({static_cast<int64_t>(prompts[i].size()), 0, &blocks, true});
    auto logits = m.Forward(batch, **kv);
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_LE(Relative(logits->select(0, 0), want_last), kRelTolerance);

    // Decode along the reference's greedy path.
    int64_t ctx = static_cast<int64_t>(prompts[i].size());
    for (int step = 1; step < kNewTokens; ++step) {
      model::ForwardBatch d;
      d.token_ids = {greedy[step - 1].item<int64_t>()};
      d.seqs.push_back({1, ctx, &blocks, true});
      auto l = m.Forward(d, **kv);
      ASSERT_TRUE(l.ok()) << l.status();
      ++ctx;
      EXPECT_LE(Relative(l->select(0, 0), want_steps[step]), kRelTolerance) << "decode step " << step;
    }
    (*kv)->Free(blocks);
  }

  // Greedy generation through the engine, all prompts batched together.
  auto reloaded = model::LlamaModel::Load(model_dir, options);
  ASSERT_TRUE(reloaded.ok());
  engine::EngineOptions opts;
  opts.max_tokens_per_step = 32;  // forces chunked prefill mixed with decoding
  opts.kv_cache_bytes = 64 << 20;
  auto eng = engine::Engine::Create(*std::move(reloaded), opts, nullptr);
  ASSERT_TRUE(eng.ok()) << eng.status();
  std::vector<std::shared_ptr<testing::CollectingSink>> sinks;
  for (const auto& prompt : prompts) {
    engine::GenerationRequest req;
    req.id = "conformance";
    req.prompt = prompt;
    req.sampling.max_new_tokens = kNewTokens;
    req.sampling.ignore_eos = true;
    sinks.push_back(std::make_shared<testing::CollectingSink>());
    ASSERT_TRUE((*eng)->Submit(req, sinks.back()).ok());
  }
  int64_t compared = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(testing::Await(sinks[i]->done, "sinks[i]->done"));
    at::Tensor greedy = testing::ReadReference(**ref, absl::StrCat("r", i, ".greedy"));
    const int64_t agree = FirstNearTie(testing::ReadReference(**ref, absl::StrCat("r", i, ".step_logits")));
    ASSERT_EQ(sinks[i]->tokens.size(), static_cast<size_t>(kNewTokens));
    for (int64_t s = 0; s < agree; ++s) {
      EXPECT_EQ(sinks[i]->tokens[s], greedy[s].item<int64_t>())
          << c.name << " prompt " << i << " step " << s << " (first near-tie at step " << agree << ")";
    }
    compared += agree;
    std::cout << c.name << " prompt " << i << ": " << agree << " greedy tokens before the first near-tie\n";
  }
  EXPECT_GE(compared, kMinComparedTokens) << "too few greedy tokens before a near-tie to compare";
}

INSTANTIATE_TEST_SUITE_P(
    Checkpoints, HalfPrecisionConformanceTest,
    ::testing::Values(Case{"llama_bf16", "--arch llama --seed 11", "bfloat16", at::kBFloat16},
                      Case{"qwen2_bf16", "--arch qwen2 --seed 12", "bfloat16", at::kBFloat16},
                      Case{"llama_fp16", "--arch llama --seed 13", "float16", at::kHalf},
                      Case{"qwen2_fp16", "--arch qwen2 --seed 14", "float16", at::kHalf}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace adapterd
