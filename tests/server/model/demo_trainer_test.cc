// The demo trainer (demo_trainer.h): seeded, deterministic training of the
// demo model and its LoRA adapters, on short schedules.
#include "server/model/demo_trainer.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/compute_threads.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/model_config.h"

namespace adapterd::model {
namespace {

using ::testing::HasSubstr;

// A stream the demo model can learn quickly: 16 ids over and over.
std::vector<int32_t> PeriodicStream(int64_t n, int32_t offset = 5) {
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(offset + static_cast<int32_t>((i * 7) % 16));
  return out;
}

DemoSchedule Short(uint64_t seed = 11) {
  DemoSchedule s;
  s.seed = seed;
  s.bigram_steps = 2;
  s.base_steps = 2;
  s.lora_steps = 2;
  return s;
}

// Whether every tensor of `a` equals, name and bits, the one of `b`.
bool Identical(const NamedTensors& a, const NamedTensors& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first || !at::equal(a[i].second, b[i].second)) return false;
  }
  return true;
}

TEST(DemoTrainerTest, TheSameSeedAndTextGiveTheSameWeights) {
  ScopedComputeThreads one(1);
  const std::vector<int32_t> tokens = PeriodicStream(400);
  absl::StatusOr<NamedTensors> a = TrainDemoModel(tokens, Short(), nullptr);
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<NamedTensors> b = TrainDemoModel(tokens, Short(), nullptr);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(Identical(*a, *b));

  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(std::string(DemoConfigJson()), "demo");
  ASSERT_TRUE(config.ok());
  const std::vector<std::string> names = LlamaTensorNames(*config);
  ASSERT_EQ(a->size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ((*a)[i].first, names[i]);

  // Another seed, or other text, is another model.
  absl::StatusOr<NamedTensors> seeded = TrainDemoModel(tokens, Short(12), nullptr);
  ASSERT_TRUE(seeded.ok()) << seeded.status();
  EXPECT_FALSE(Identical(*a, *seeded));
  absl::StatusOr<NamedTensors> other = TrainDemoModel(PeriodicStream(400, 40), Short(), nullptr);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_FALSE(Identical(*a, *other));
}

TEST(DemoTrainerTest, TheModelLearnsItsText) {
  ScopedComputeThreads one(1);
  DemoSchedule s = Short();
  s.bigram_steps = 0;
  s.base_steps = 40;
  TrainReport report;
  ASSERT_TRUE(TrainDemoModel(PeriodicStream(400), s, &report).ok());
  EXPECT_LT(report.final_loss, report.first_loss / 2) << report.first_loss << " -> " << report.final_loss;
  EXPECT_EQ(report.tokens, 40 * 8 * 64);
}

TEST(DemoTrainerTest, AdaptersAreSeededDeterministicAndNamedAsPeftSavesThem) {
  ScopedComputeThreads one(1);
  const std::vector<int32_t> tokens = PeriodicStream(400);
  absl::StatusOr<NamedTensors> base = TrainDemoModel(tokens, Short(), nullptr);
  ASSERT_TRUE(base.ok()) << base.status();
  const DemoLoraSpec spec{2, 4, {Proj::kQ, Proj::kV}, 5};
  const std::vector<int32_t> text = PeriodicStream(300, 60);
  absl::StatusOr<NamedTensors> a = TrainDemoLora(*base, text, spec, Short(), nullptr);
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<NamedTensors> b = TrainDemoLora(*base, text, spec, Short(), nullptr);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(Identical(*a, *b));

  // 4 layers x (q, v) x (A, B); B starts at zero and has learnt something.
  ASSERT_EQ(a->size(), 16u);
  EXPECT_EQ((*a)[0].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ((*a)[1].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ((*a)[3].first, "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight");
  EXPECT_EQ((*a)[0].second.sizes(), (std::vector<int64_t>{2, 256}));
  EXPECT_EQ((*a)[1].second.sizes(), (std::vector<int64_t>{256, 2}));
  EXPECT_GT((*a)[1].second.abs().max().item<float>(), 0.0f);

  DemoLoraSpec reseeded = spec;
  reseeded.seed = 6;
  absl::StatusOr<NamedTensors> c = TrainDemoLora(*base, text, reseeded, Short(), nullptr);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(Identical(*a, *c));
}

TEST(DemoTrainerTest, RefusesSchedulesAndSpecsThatCannotWork) {
  ScopedComputeThreads one(1);
  DemoSchedule none = Short();
  none.base_steps = 0;
  absl::StatusOr<NamedTensors> base = TrainDemoModel(PeriodicStream(400), none, nullptr);
  EXPECT_EQ(base.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(base.status().message()), HasSubstr("steps"));
  EXPECT_EQ(TrainDemoModel(PeriodicStream(40), Short(), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);  // shorter than one window

  base = TrainDemoModel(PeriodicStream(400), Short(), nullptr);
  ASSERT_TRUE(base.ok()) << base.status();
  absl::StatusOr<NamedTensors> lora = TrainDemoLora(*base, PeriodicStream(300), {0, 4, {Proj::kQ}, 1}, Short(), nullptr);
  EXPECT_EQ(lora.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(lora.status().message()), HasSubstr("r >= 1"));
}

}  // namespace
}  // namespace adapterd::model
