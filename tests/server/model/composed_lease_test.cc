// Composition in the model layer: ComposeLora's views and checks, the
// forward pass of a composite against PEFT's "cat" construction built by
// hand, and ComposedLease's settling.
#include "server/model/composed_lease.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/llama_model.h"
#include "tests/fakes/fake_lease.h"
#include "tests/support/test_env.h"

namespace adapterd::model {
namespace {

using ::testing::HasSubstr;

// A LoRA of rank r on `projs` of every layer of `base`, random from `seed`,
// with a delta large enough to change the logits.
std::shared_ptr<AdapterWeights> RandomLora(const LlamaModel& base, int64_t r, double scale,
                                           std::vector<Proj> projs, uint64_t seed) {
  at::manual_seed(seed);
  auto w = std::make_shared<AdapterWeights>(base.config().num_layers);
  for (int64_t l = 0; l < base.config().num_layers; ++l) {
    for (Proj p : projs) {
      const at::Tensor& weight = base.ProjWeight(l, p);
      const int64_t out = weight.size(0), in = weight.size(1);
      w->Set(l, p, LoraModule::FromPeft(at::randn({r, in}) / std::sqrt(in), at::randn({out, r}) * 0.3 / scale, scale));
    }
  }
  return w;
}

// PEFT's add_weighted_adapter(combination_type="cat") as one adapter:
// A = cat(w_i s_i A_i), B = cat(B_i, dim 1), scale 1, built by copying.
std::shared_ptr<AdapterWeights> CatByHand(std::span<const WeightedWeights> parts, int64_t layers) {
  auto w = std::make_shared<AdapterWeights>(layers);
  for (int64_t l = 0; l < layers; ++l) {
    for (int p = 0; p < kNumProj; ++p) {
      std::vector<at::Tensor> as, bs;
      for (const WeightedWeights& part : parts) {
        if (const LoraModule* m = part.weights->Find(l, static_cast<Proj>(p))) {
          as.push_back(m->a * (part.weight * m->scale));
          bs.push_back(m->b);
        }
      }
      if (!as.empty()) w->Set(l, static_cast<Proj>(p), LoraModule::FromPeft(at::cat(as, 0), at::cat(bs, 1), 1.0));
    }
  }
  return w;
}

class ComposeModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = EnsureDemoCheckpoint(testing::MakeTempDir("compose-model"));
    ASSERT_TRUE(dir.ok()) << dir.status();
    auto m = LlamaModel::Load(*dir, {});
    ASSERT_TRUE(m.ok()) << m.status();
    base_ = m->release();
  }
  static void TearDownTestSuite() { delete base_; }
  static LlamaModel* base_;
};
LlamaModel* ComposeModelTest::base_ = nullptr;

TEST_F(ComposeModelTest, CompositeSharesTheComponentsTensors) {
  auto a = RandomLora(*base_, 4, 2.0, {Proj::kQ, Proj::kV}, 1);
  auto b = RandomLora(*base_, 8, 0.5, {Proj::kV, Proj::kDown}, 2);
  const WeightedWeights parts[] = {{"a", a.get(), 0.75}, {"b", b.get(), -1.5}, {"a", a.get(), 0.25}};
  auto c = ComposeLora(parts);
  ASSERT_TRUE(c.ok()) << c.status();
  const AdapterWeights& w = **c;
  EXPECT_TRUE(w.composed());
  EXPECT_EQ(w.bytes(), 0);
  for (int64_t l = 0; l < w.num_layers(); ++l) {
    EXPECT_EQ(w.Find(l, Proj::kQ), nullptr);
    ASSERT_EQ(w.Loras(l, Proj::kQ).size(), 2u);
    ASSERT_EQ(w.Loras(l, Proj::kV).size(), 3u);
    ASSERT_EQ(w.Loras(l, Proj::kDown).size(), 1u);
    EXPECT_TRUE(w.Loras(l, Proj::kO).empty());
    const LoraModule& v1 = w.Loras(l, Proj::kV)[1];
    EXPECT_EQ(v1.a_t.data_ptr(), b->Find(l, Proj::kV)->a_t.data_ptr());
    EXPECT_EQ(v1.b_t.data_ptr(), b->Find(l, Proj::kV)->b_t.data_ptr());
    EXPECT_DOUBLE_EQ(v1.scale, 0.5 * -1.5);
    EXPECT_DOUBLE_EQ(w.Loras(l, Proj::kQ)[0].scale, 2.0 * 0.75);
    EXPECT_DOUBLE_EQ(w.Loras(l, Proj::kQ)[1].scale, 2.0 * 0.25);
  }
  // A single adapter's Loras() is its own module.
  ASSERT_EQ(a->Loras(0, Proj::kQ).size(), 1u);
  EXPECT_EQ(&a->Loras(0, Proj::kQ)[0], a->Find(0, Proj::kQ));
  EXPECT_TRUE(a->Loras(0, Proj::kK).empty());
}

TEST_F(ComposeModelTest, OnlyPlainLoraComposes) {
  auto lora = RandomLora(*base_, 4, 2.0, {Proj::kQ}, 3);
  auto dora = RandomLora(*base_, 4, 2.0, {Proj::kQ}, 4);
  {
    LoraModule m = *dora->Find(1, Proj::kQ);
    m.dora_scale = at::ones({m.b.size(0)});
    dora->Set(1, Proj::kQ, m);
  }
  auto ia3 = std::make_shared<AdapterWeights>(base_->config().num_layers, AdapterKind::kIa3);
  ia3->SetIa3(0, Proj::kK, Ia3Module{at::ones({128}), false});
  auto bias = RandomLora(*base_, 4, 2.0, {Proj::kQ}, 5);
  bias->SetBiasDelta(2, Proj::kO, at::zeros({256}));
  auto head = RandomLora(*base_, 4, 2.0, {Proj::kQ}, 6);
  head->SetLmHead(base_->lm_head().clone());
  auto nested = *ComposeLora(std::vector<WeightedWeights>{{"lora", lora.get(), 1.0}});
  const struct {
    const AdapterWeights* w;
    const char* why;
  } cases[] = {{dora.get(), "DoRA"}, {ia3.get(), "IA3"}, {bias.get(), "biases"}, {head.get(), "LM head"},
               {nested.get(), "composition"}};
  for (const auto& c : cases) {
    const WeightedWeights parts[] = {{"lora", lora.get(), 1.0}, {"bad", c.w, 1.0}};
    absl::StatusOr<std::shared_ptr<const AdapterWeights>> r = ComposeLora(parts);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.why;
    EXPECT_THAT(r.status().message(), HasSubstr("adapter 'bad'")) << c.why;
    EXPECT_THAT(r.status().message(), HasSubstr(c.why));
  }
  const WeightedWeights nan[] = {{"lora", lora.get(), std::numeric_limits<double>::quiet_NaN()}};
  EXPECT_THAT(ComposeLora(nan).status().message(), HasSubstr("not finite"));
  EXPECT_FALSE(ComposeLora({}).ok());
}

// A composite row equals the same row through PEFT's concatenated adapter,
// through the direct row kernel (a few rows) and ATen (many), in a batch
// with a single-adapter row and a base row.
TEST_F(ComposeModelTest, CompositeForwardEqualsTheConcatenatedAdapter) {
  auto a = RandomLora(*base_, 4, 2.0, {Proj::kQ, Proj::kV, Proj::kDown}, 7);
  auto b = RandomLora(*base_, 8, 1.0, {Proj::kK, Proj::kV, Proj::kGate, Proj::kUp}, 8);
  auto c = RandomLora(*base_, 16, 0.25, {Proj::kO, Proj::kDown}, 9);
  const WeightedWeights parts[] = {{"a", a.get(), 1.25}, {"b", b.get(), -0.5}, {"c", c.get(), 0.75}};
  auto composite = ComposeLora(parts);
  ASSERT_TRUE(composite.ok()) << composite.status();
  auto cat = CatByHand(parts, base_->config().num_layers);
  auto kv = KvCache::Create(base_->config(), 16, 16 << 20, at::kFloat, at::kCPU);
  ASSERT_TRUE(kv.ok());
  for (int64_t len : {3, 20}) {
    std::vector<int64_t> prompt;
    for (int64_t i = 0; i < len; ++i) prompt.push_back(7 + 13 * i);
    auto run = [&](std::vector<const AdapterWeights*> rows) {
      std::vector<std::vector<int32_t>> blocks(rows.size());
      ForwardBatch batch;
      for (size_t i = 0; i < rows.size(); ++i) {
        EXPECT_TRUE((*kv)->Reserve(blocks[i], len));
        batch.token_ids.insert(batch.token_ids.end(), prompt.begin(), prompt.end());
        batch.seqs.push_back({len, 0, &blocks[i], true});
        batch.adapters.push_back(rows[i]);
      }
      auto logits = base_->Forward(batch, **kv);
      EXPECT_TRUE(logits.ok()) << logits.status();
      for (auto& bl : blocks) (*kv)->Free(bl);
      return *logits;
    };
    const at::Tensor want = run({cat.get()});
    const at::Tensor alone = run({composite->get()});
    const at::Tensor mixed = run({a.get(), composite->get(), nullptr});
    EXPECT_LE((alone - want).abs().max().item<double>(), 1e-4) << len << " rows";
    EXPECT_LE((mixed[1] - want[0]).abs().max().item<double>(), 1e-4) << len << " rows, mixed";
    EXPECT_GT((want[0] - run({a.get()})[0]).abs().max().item<double>(), 1e-2) << "the composite changes nothing";
  }
}

TEST_F(ComposeModelTest, ComposedLeaseSettlesOnceEveryComponentHas) {
  auto a = RandomLora(*base_, 4, 2.0, {Proj::kQ}, 10);
  auto b = RandomLora(*base_, 4, 2.0, {Proj::kV}, 11);
  auto la = std::make_shared<testing::FakeLease>(a.get(), testing::FakeLease::Arrival::kWhenTold);
  auto lb = std::make_shared<testing::FakeLease>(b.get(), testing::FakeLease::Arrival::kWhenTold);
  auto lease = ComposedLease::Create({{la, 1.0}, {lb, -2.0}});
  EXPECT_EQ(lease->adapter_id(), "fake");
  int called = 0;
  lease->NotifyWhenSettled([&] { ++called; });
  EXPECT_EQ(lease->weights().value(), nullptr);
  lb->Arrive();
  EXPECT_EQ(lease->weights().value(), nullptr);
  EXPECT_EQ(called, 0);
  la->Arrive();
  EXPECT_EQ(called, 1);
  absl::StatusOr<const AdapterWeights*> w = lease->weights();
  ASSERT_TRUE(w.ok() && *w != nullptr);
  EXPECT_EQ((*w)->Loras(0, Proj::kQ).size(), 1u);
  EXPECT_DOUBLE_EQ((*w)->Loras(0, Proj::kV)[0].scale, -4.0);
  EXPECT_EQ(lease->weights().value(), *w);  // the same pointer from now on
  // Already settled components: settled from the start, and a late
  // NotifyWhenSettled runs at once.
  auto resident = ComposedLease::Create({{LeaseResident("a", a), 0.5}, {LeaseResident("b", b), 0.5}});
  ASSERT_NE(resident->weights().value(), nullptr);
  bool now = false;
  resident->NotifyWhenSettled([&] { now = true; });
  EXPECT_TRUE(now);
}

TEST_F(ComposeModelTest, ComposedLeaseFailsWhenAComponentCannotCompose) {
  auto lora = RandomLora(*base_, 4, 2.0, {Proj::kQ}, 12);
  auto ia3 = std::make_shared<AdapterWeights>(base_->config().num_layers, AdapterKind::kIa3);
  auto lease = ComposedLease::Create({{LeaseResident("lora", lora), 1.0}, {LeaseResident("ia3", ia3), 1.0}});
  EXPECT_EQ(lease->weights().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(lease->weights().status().message(), HasSubstr("'ia3'"));
  // A lease dropped before its components settle lets them go.
  auto pending = std::make_shared<testing::FakeLease>(lora.get(), testing::FakeLease::Arrival::kWhenTold);
  std::weak_ptr<testing::FakeLease> weak = pending;
  auto dropped = ComposedLease::Create({{std::move(pending), 1.0}});
  dropped.reset();
  EXPECT_TRUE(weak.expired());
}

}  // namespace
}  // namespace adapterd::model
