// AdapterWeights: the row view a LoRA module gets when placed, PackLoras
// (values, layout and views after the move), and the per-family flags the
// Find functions answer from.
#include "server/model/adapter_weights.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

LoraModule RandomModule(int64_t in, int64_t out, int64_t r, at::ScalarType dtype) {
  return LoraModule::FromPeft(at::randn({r, in}).to(dtype), at::randn({out, r}).to(dtype), 0.5);
}

TEST(AdapterWeightsTest, SetGivesTheModuleItsRowView) {
  AdapterWeights w(1);
  w.Set(0, Proj::kQ, RandomModule(24, 40, 4, at::kBFloat16));
  const LoraModule& m = *w.Find(0, Proj::kQ);
  EXPECT_TRUE(m.row.ok);
  EXPECT_EQ(m.row.a_t, m.a_t.data_ptr());
  EXPECT_EQ(m.row.b_t, m.b_t.data_ptr());
  EXPECT_EQ(m.row.rank, 4);
  EXPECT_EQ(m.row.type, LoraWeightType::kBF16);
  EXPECT_EQ(m.row.dora_scale, nullptr);
}

TEST(AdapterWeightsTest, RowViewRefusesWhatTheKernelsCannotRead) {
  AdapterWeights w(1);
  LoraModule mixed = RandomModule(8, 8, 2, at::kFloat);
  mixed.b_t = mixed.b_t.to(at::kHalf);  // A and B of different dtypes
  w.Set(0, Proj::kQ, mixed);
  EXPECT_FALSE(w.Find(0, Proj::kQ)->row.ok);
  w.Set(0, Proj::kK, RandomModule(8, 8, 2, at::kDouble));
  EXPECT_FALSE(w.Find(0, Proj::kK)->row.ok);
  LoraModule dora = RandomModule(8, 8, 2, at::kFloat);
  dora.dora_scale = at::ones({8}, at::kHalf);  // magnitudes not float32
  w.Set(0, Proj::kV, dora);
  EXPECT_FALSE(w.Find(0, Proj::kV)->row.ok);
  dora.dora_scale = at::ones({8});
  w.Set(0, Proj::kO, dora);
  EXPECT_TRUE(w.Find(0, Proj::kO)->row.ok);
  EXPECT_EQ(w.Find(0, Proj::kO)->row.dora_scale, w.Find(0, Proj::kO)->dora_scale.data_ptr<float>());
}

TEST(AdapterWeightsTest, PackLorasKeepsTheValuesInOneRegionInStepOrder) {
  at::manual_seed(3);
  AdapterWeights w(2);
  const Proj projs[] = {Proj::kQ, Proj::kV, Proj::kGate, Proj::kUp, Proj::kDown};
  std::vector<at::Tensor> before;  // a_t, b_t of each module in `projs` order, layer by layer
  for (int64_t l = 0; l < 2; ++l) {
    for (Proj p : projs) {
      w.Set(l, p, RandomModule(48 + l, 33, 8, l == 0 ? at::kFloat : at::kBFloat16));
      before.push_back(w.Find(l, p)->a_t.clone());
      before.push_back(w.Find(l, p)->b_t.clone());
    }
  }
  const int64_t bytes = w.bytes();
  w.PackLoras();
  EXPECT_EQ(w.bytes(), bytes);
  size_t i = 0;
  for (int64_t l = 0; l < 2; ++l) {
    for (Proj p : projs) {
      const LoraModule& m = *w.Find(l, p);
      EXPECT_TRUE(at::equal(m.a_t, before[i++]));
      EXPECT_TRUE(at::equal(m.b_t, before[i++]));
      for (const at::Tensor* t : {&m.a_t, &m.b_t}) {
        EXPECT_TRUE(t->is_contiguous());
        EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data_ptr()) % 64, 0u);
        EXPECT_TRUE(t->storage().is_alias_of(w.Find(0, Proj::kQ)->a_t.storage()));  // one region for all
      }
      EXPECT_TRUE(m.a.is_alias_of(m.a_t));
      EXPECT_TRUE(m.b.is_alias_of(m.b_t));
      EXPECT_EQ(m.row.a_t, m.a_t.data_ptr());
      EXPECT_EQ(m.row.b_t, m.b_t.data_ptr());
      EXPECT_TRUE(m.row.ok);
    }
  }
  // The order a step reads them: per layer and group of projections that
  // share an input (q/v here, gate/up, down), the group's A's, then its B's,
  // each right after the last (at most 63 bytes of padding).
  std::vector<const at::Tensor*> order;
  for (int64_t l = 0; l < 2; ++l) {
    const auto f = [&](Proj p) { return w.Find(l, p); };
    for (const at::Tensor* t : {&f(Proj::kQ)->a_t, &f(Proj::kV)->a_t, &f(Proj::kQ)->b_t, &f(Proj::kV)->b_t,
                                &f(Proj::kGate)->a_t, &f(Proj::kUp)->a_t, &f(Proj::kGate)->b_t, &f(Proj::kUp)->b_t,
                                &f(Proj::kDown)->a_t, &f(Proj::kDown)->b_t}) {
      order.push_back(t);
    }
  }
  for (size_t j = 1; j < order.size(); ++j) {
    const auto* prev_end = static_cast<const char*>(order[j - 1]->data_ptr()) + order[j - 1]->nbytes();
    const auto* start = static_cast<const char*>(order[j]->data_ptr());
    EXPECT_GE(start, prev_end) << j;
    EXPECT_LT(start - prev_end, 64) << j;
  }
}

TEST(AdapterWeightsTest, PackLorasWithoutLorasDoesNothing) {
  AdapterWeights w(1);
  w.PackLoras();
  EXPECT_EQ(w.bytes(), 0);
  EXPECT_EQ(w.Find(0, Proj::kQ), nullptr);
}

TEST(AdapterWeightsTest, FindAnswersFromTheFamilyFlags) {
  AdapterWeights w(2);
  EXPECT_EQ(w.FindIa3(1, Proj::kUp), nullptr);
  EXPECT_EQ(w.FindBiasDelta(1, Proj::kUp), nullptr);
  EXPECT_EQ(w.FindBottleneck(1, BottleneckLocation::kOutput), nullptr);
  EXPECT_EQ(w.FindAdaptionPrompt(1), nullptr);
  w.SetIa3(1, Proj::kUp, Ia3Module{at::ones({4}), true});
  w.SetBiasDelta(0, Proj::kQ, at::ones({4}));
  BottleneckModule b;
  b.down_t = at::ones({4, 2});
  w.SetBottleneck(1, BottleneckLocation::kOutput, b);
  AdaptionPromptModule a;
  a.v = at::ones({1, 2, 4});
  w.SetAdaptionPrompt(0, a);
  EXPECT_NE(w.FindIa3(1, Proj::kUp), nullptr);
  EXPECT_EQ(w.FindIa3(0, Proj::kUp), nullptr);
  EXPECT_NE(w.FindBiasDelta(0, Proj::kQ), nullptr);
  EXPECT_EQ(w.FindBiasDelta(1, Proj::kQ), nullptr);
  EXPECT_NE(w.FindBottleneck(1, BottleneckLocation::kOutput), nullptr);
  EXPECT_EQ(w.FindBottleneck(0, BottleneckLocation::kOutput), nullptr);
  EXPECT_NE(w.FindAdaptionPrompt(0), nullptr);
  EXPECT_EQ(w.FindAdaptionPrompt(1), nullptr);
}

}  // namespace
}  // namespace adapterd::model
