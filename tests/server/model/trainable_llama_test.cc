// TrainableLlama (the differentiable forward pass used to train the demo)
// against LlamaModel, and the next-token trainer (lm_trainer.h).
#include "server/model/trainable_llama.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/compute_threads.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/kv_cache.h"
#include "server/model/llama_model.h"
#include "server/model/lm_trainer.h"
#include "server/model/model_config.h"
#include "tests/support/test_env.h"

namespace adapterd::model {
namespace {

using ::testing::HasSubstr;

std::vector<at::Tensor> Tensors(const NamedTensors& named) {
  std::vector<at::Tensor> out;
  for (const auto& [name, t] : named) out.push_back(t);
  return out;
}

ModelConfig TinyConfig() {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(R"({
    "architectures": ["LlamaForCausalLM"], "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": false})", "tiny");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

std::vector<at::Tensor> TinyWeights(const ModelConfig& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<at::Tensor> out;
  for (const std::vector<int64_t>& shape : LlamaTensorShapes(c)) {
    out.push_back(shape.size() == 1 ? at::ones(shape) : at::normal(0.0, 0.2, shape, gen, at::TensorOptions()));
  }
  return out;
}

TEST(TrainableLlamaTest, NamesAndShapesFollowTheCheckpoint) {
  const NamedTensors demo = RandomDemoWeights();
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(std::string(DemoConfigJson()), "demo");
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<std::string> names = LlamaTensorNames(*c);
  const std::vector<std::vector<int64_t>> shapes = LlamaTensorShapes(*c);
  ASSERT_EQ(names.size(), demo.size());
  for (size_t i = 0; i < demo.size(); ++i) {
    EXPECT_EQ(names[i], demo[i].first);
    EXPECT_EQ(shapes[i], demo[i].second.sizes().vec()) << names[i];
  }
}

TEST(TrainableLlamaTest, LogitsMatchTheServingModel) {
  const std::string dir = *EnsureDemoCheckpoint(testing::MakeTempDir("trainable-demo"));
  absl::StatusOr<std::unique_ptr<LlamaModel>> serving = LlamaModel::Load(dir, {});
  ASSERT_TRUE(serving.ok()) << serving.status();
  absl::StatusOr<TrainableLlama> trainable = TrainableLlama::Create((*serving)->config(), Tensors(RandomDemoWeights()));
  ASSERT_TRUE(trainable.ok()) << trainable.status();

  const std::vector<int64_t> prompt = {1, 17, 523, 1999, 42, 7, 256, 1024, 3, 88, 2047};
  const int64_t n = static_cast<int64_t>(prompt.size());
  absl::StatusOr<std::unique_ptr<KvCache>> kv =
      KvCache::Create((*serving)->config(), 16, int64_t{32} << 20, at::kFloat, at::kCPU);
  ASSERT_TRUE(kv.ok()) << kv.status();
  std::vector<int32_t> blocks;
  ASSERT_TRUE((*kv)->Reserve(blocks, n));
  ForwardBatch batch;
  batch.token_ids = prompt;
  batch.seqs.push_back(SequenceChunk{n, 0, &blocks, true});
  absl::StatusOr<at::Tensor> want = (*serving)->Forward(batch, **kv);
  ASSERT_TRUE(want.ok()) << want.status();

  at::Tensor ids = at::tensor(at::ArrayRef<int64_t>(prompt), at::kLong).unsqueeze(0);
  at::Tensor got = trainable->Forward(ids).select(1, n - 1);
  EXPECT_LT((got - *want).abs().max().item<double>(), 1e-4);
}

TEST(TrainableLlamaTest, LoraAddsItsProduct) {
  const ModelConfig c = TinyConfig();
  std::vector<at::Tensor> w = TinyWeights(c, 1);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  LoraFactors f{1, Proj::kUp, at::normal(0.0, 0.3, {3, 16}, gen, at::TensorOptions()),
                at::normal(0.0, 0.3, {24, 3}, gen, at::TensorOptions()), 0.5};
  std::vector<at::Tensor> merged = w;
  const size_t up = 1 + 1 * 9 + 7;  // layer 1's up_proj
  merged[up] = w[up] + at::matmul(f.b, f.a) * f.scale;
  at::Tensor ids = at::arange(10, at::kLong).remainder(c.vocab_size).view({2, 5});
  at::Tensor with_lora = TrainableLlama::Create(c, w)->Forward(ids, std::vector<LoraFactors>{f});
  at::Tensor with_merge = TrainableLlama::Create(c, merged)->Forward(ids);
  EXPECT_LT((with_lora - with_merge).abs().max().item<double>(), 1e-5);
  EXPECT_GT((with_lora - TrainableLlama::Create(c, w)->Forward(ids)).abs().max().item<double>(), 1e-3);
}

TEST(TrainableLlamaTest, GradientsReachEveryWeightAndOnlyTrainedOnes) {
  const ModelConfig c = TinyConfig();
  std::vector<at::Tensor> w = TinyWeights(c, 3);
  for (at::Tensor& t : w) t.requires_grad_(true);
  at::Tensor ids = at::arange(12, at::kLong).remainder(c.vocab_size).view({2, 6});
  TrainableLlama::Create(c, w)->NextTokenLoss(ids).backward();
  for (size_t i = 0; i < w.size(); ++i) {
    ASSERT_TRUE(w[i].grad().defined()) << LlamaTensorNames(c)[i];
    EXPECT_GT(w[i].grad().abs().sum().item<double>(), 0) << LlamaTensorNames(c)[i];
  }

  std::vector<at::Tensor> frozen = TinyWeights(c, 3);
  LoraFactors f{0, Proj::kQ, at::ones({2, 16}).requires_grad_(true), at::zeros({16, 2}).requires_grad_(true), 1.0};
  TrainableLlama::Create(c, frozen)->NextTokenLoss(ids, std::vector<LoraFactors>{f}).backward();
  for (const at::Tensor& t : frozen) EXPECT_FALSE(t.grad().defined());
  EXPECT_GT(f.b.grad().abs().sum().item<double>(), 0);  // B starts at zero, so only B moves first
}

TEST(TrainableLlamaTest, RefusesWrongWeights) {
  const ModelConfig c = TinyConfig();
  std::vector<at::Tensor> w = TinyWeights(c, 1);
  w.pop_back();
  EXPECT_THAT(std::string(TrainableLlama::Create(c, w).status().message()), HasSubstr("expected"));
  w = TinyWeights(c, 1);
  w[2] = at::zeros({3, 3});
  EXPECT_THAT(std::string(TrainableLlama::Create(c, w).status().message()),
              HasSubstr("model.layers.0.self_attn.q_proj.weight must be a float32 tensor of shape [16, 16]"));
}

// A stream the tiny model can learn: 0 1 2 ... 31 0 1 2 ...
std::vector<int32_t> CountingStream(int64_t n) {
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(static_cast<int32_t>(i % 32));
  return out;
}

absl::StatusOr<TrainReport> TrainTiny(std::vector<at::Tensor>& w, int workers) {
  const ModelConfig c = TinyConfig();
  std::vector<TrainParam> params;
  for (const at::Tensor& t : w) params.push_back({t, t.dim() == 2});
  TrainOptions o;
  o.steps = 60;
  o.batch_size = 4;
  o.seq_len = 16;
  o.learning_rate = 1e-2;
  o.warmup_steps = 5;
  o.weight_decay = 0.01;
  o.workers = workers;
  BatchLoss loss = [&c](std::span<const at::Tensor> p, const at::Tensor& ids) {
    return TrainableLlama::Create(c, {p.begin(), p.end()})->NextTokenLoss(ids);
  };
  return TrainNextToken(CountingStream(500), params, loss, o);
}

TEST(LmTrainerTest, LearnsAndIsDeterministic) {
  ScopedComputeThreads one(1);
  const ModelConfig c = TinyConfig();
  std::vector<at::Tensor> a = TinyWeights(c, 5), b = TinyWeights(c, 5), d = TinyWeights(c, 5);
  absl::StatusOr<TrainReport> ra = TrainTiny(a, 2);
  ASSERT_TRUE(ra.ok()) << ra.status();
  EXPECT_LT(ra->final_loss, ra->first_loss / 4);
  EXPECT_EQ(ra->tokens, 60 * 4 * 16);
  ASSERT_TRUE(TrainTiny(b, 2).ok());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << LlamaTensorNames(c)[i];
  // Another worker count is another (equally valid) computation.
  ASSERT_TRUE(TrainTiny(d, 1).ok());
  EXPECT_FALSE(at::equal(a[1], d[1]));
}

TEST(LmTrainerTest, RefusesWhatCannotWork) {
  std::vector<TrainParam> params = {{at::zeros({2}), false}};
  BatchLoss loss = [](std::span<const at::Tensor> p, const at::Tensor&) { return p[0].sum(); };
  TrainOptions o;
  o.seq_len = 8;
  EXPECT_THAT(std::string(TrainNextToken(std::vector<int32_t>(5, 0), params, loss, o).status().message()),
              HasSubstr("fewer than one sequence"));
  o.workers = 3;
  EXPECT_THAT(std::string(TrainNextToken(std::vector<int32_t>(50, 0), params, loss, o).status().message()),
              HasSubstr("multiple of workers"));
  o.workers = 1;
  std::vector<TrainParam> grad = {{at::zeros({2}).requires_grad_(true), false}};
  EXPECT_THAT(std::string(TrainNextToken(std::vector<int32_t>(50, 0), grad, loss, o).status().message()),
              HasSubstr("not require grad"));
  BatchLoss throws = [](std::span<const at::Tensor>, const at::Tensor&) { return at::zeros({2, 2}).mm(at::zeros({3, 3})); };
  absl::StatusOr<TrainReport> r = TrainNextToken(std::vector<int32_t>(50, 0), params, throws, o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace adapterd::model
