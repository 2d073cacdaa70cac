// LoraSlotPool: placed LoRA modules are contiguous views of their slot with
// the values they had, an adapter's slot returns to the pool when its
// weights are destroyed and is then reused, a full pool and adapters that
// do not fit a slot leave the weights untouched, and the usage listener
// follows every change. The forward pass over placed weights is checked
// against PEFT in LoraConformanceTest.
#include "server/model/lora_slot_pool.h"

#include <ATen/ATen.h>

#include <memory>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

constexpr int64_t kLayers = 2, kHidden = 48, kInter = 64, kHeads = 4, kKvHeads = 2, kHeadDim = 8;

ModelConfig Config() {
  ModelConfig c;
  c.num_layers = kLayers;
  c.hidden_size = kHidden;
  c.intermediate_size = kInter;
  c.num_heads = kHeads;
  c.num_kv_heads = kKvHeads;
  c.head_dim = kHeadDim;
  return c;
}

std::pair<int64_t, int64_t> Dims(Proj p) {  // (in, out)
  switch (p) {
    case Proj::kQ: return {kHidden, kHeads * kHeadDim};
    case Proj::kK:
    case Proj::kV: return {kHidden, kKvHeads * kHeadDim};
    case Proj::kO: return {kHeads * kHeadDim, kHidden};
    case Proj::kGate:
    case Proj::kUp: return {kHidden, kInter};
    case Proj::kDown: return {kInter, kHidden};
  }
  return {0, 0};
}

// A LoRA of rank r on `projs` of every layer (r + layer on the first one,
// so that ranks differ within the adapter).
std::shared_ptr<AdapterWeights> Lora(const std::vector<Proj>& projs, int64_t r, at::ScalarType dtype = at::kFloat) {
  auto w = std::make_shared<AdapterWeights>(kLayers);
  for (int64_t l = 0; l < kLayers; ++l) {
    for (size_t i = 0; i < projs.size(); ++i) {
      const auto [in, out] = Dims(projs[i]);
      const int64_t rank = i == 0 ? r + l : r;
      w->Set(l, projs[i], LoraModule::FromPeft(at::randn({rank, in}).to(dtype), at::randn({out, rank}).to(dtype), 0.5));
    }
  }
  return w;
}

const std::vector<Proj> kAll = {Proj::kQ, Proj::kK, Proj::kV, Proj::kO, Proj::kGate, Proj::kUp, Proj::kDown};

std::unique_ptr<LoraSlotPool> Pool(int64_t slots, int64_t max_rank, at::ScalarType dtype = at::kFloat) {
  auto pool = LoraSlotPool::Create(Config(), slots, max_rank, at::kCPU, dtype);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return pool.ok() ? *std::move(pool) : nullptr;
}

TEST(LoraSlotPoolTest, PlacedModulesAreContiguousViewsOfTheirSlotWithTheSameValues) {
  auto pool = Pool(3, 8);
  ASSERT_NE(pool, nullptr);
  auto a = Lora(kAll, 4), b = Lora({Proj::kQ, Proj::kV, Proj::kDown}, 7);
  std::vector<at::Tensor> before_a, before_b;
  for (int64_t l = 0; l < kLayers; ++l) {
    for (Proj p : kAll) {
      before_a.push_back(a->Find(l, p)->a_t.clone());
      before_a.push_back(a->Find(l, p)->b_t.clone());
    }
  }
  const int64_t bytes_a = a->bytes();
  auto placed = pool->Place(*a);
  ASSERT_TRUE(placed.ok()) << placed.status();
  EXPECT_EQ(*placed, LoraSlotPool::Placement::kPlaced);
  ASSERT_EQ(*pool->Place(*b), LoraSlotPool::Placement::kPlaced);
  EXPECT_EQ(pool->used_slots(), 2);
  EXPECT_NE(a->pool_slot(), b->pool_slot());
  EXPECT_EQ(a->bytes(), bytes_a);  // what the cache counts does not change
  size_t i = 0;
  const auto* first = static_cast<const char*>(a->Find(0, Proj::kQ)->a_t.data_ptr());
  for (int64_t l = 0; l < kLayers; ++l) {
    for (Proj p : kAll) {
      const LoraModule* m = a->Find(l, p);
      ASSERT_NE(m, nullptr);
      EXPECT_TRUE(m->a_t.is_contiguous() && m->b_t.is_contiguous());
      EXPECT_TRUE(at::equal(m->a_t, before_a[i++]));
      EXPECT_TRUE(at::equal(m->b_t, before_a[i++]));
      EXPECT_TRUE(at::equal(m->a, m->a_t.t()) && at::equal(m->b, m->b_t.t()));
      // Every module lies in one slot's bytes, after the first module's start.
      for (const at::Tensor* t : {&m->a_t, &m->b_t}) {
        const auto* p0 = static_cast<const char*>(t->data_ptr());
        EXPECT_GE(p0, first);
        EXPECT_LE(p0 + t->nbytes(), first + pool->slot_bytes());
        EXPECT_EQ(reinterpret_cast<uintptr_t>(p0) % 64, 0u);
      }
    }
  }
  // Projections b does not target stay absent.
  EXPECT_EQ(b->Find(0, Proj::kK), nullptr);
  EXPECT_EQ(b->Find(1, Proj::kQ)->rank(), 8);
}

TEST(LoraSlotPoolTest, SlotsReturnWhenTheWeightsGoAndAreReused) {
  auto pool = Pool(2, 8);
  ASSERT_NE(pool, nullptr);
  std::vector<std::pair<int64_t, int64_t>> seen;
  pool->SetUsageListener([&](int64_t used, int64_t total) { seen.emplace_back(used, total); });
  auto a = Lora(kAll, 2), b = Lora(kAll, 3), c = Lora(kAll, 4);
  ASSERT_EQ(*pool->Place(*a), LoraSlotPool::Placement::kPlaced);
  ASSERT_EQ(*pool->Place(*b), LoraSlotPool::Placement::kPlaced);
  // Full: c keeps its own tensors, untouched.
  const at::Tensor c_q = c->Find(0, Proj::kQ)->a_t;
  EXPECT_EQ(*pool->Place(*c), LoraSlotPool::Placement::kFull);
  EXPECT_EQ(c->pool_slot(), -1);
  EXPECT_TRUE(c->Find(0, Proj::kQ)->a_t.is_same(c_q));
  const int64_t slot_a = a->pool_slot();
  a.reset();
  EXPECT_EQ(pool->used_slots(), 1);
  ASSERT_EQ(*pool->Place(*c), LoraSlotPool::Placement::kPlaced);
  EXPECT_EQ(c->pool_slot(), slot_a);
  EXPECT_TRUE(at::equal(c->Find(0, Proj::kQ)->a_t, c_q));
  const std::vector<std::pair<int64_t, int64_t>> want = {{0, 2}, {1, 2}, {2, 2}, {1, 2}, {2, 2}};
  EXPECT_EQ(seen, want);
  // Weights may outlive the pool; their slot then goes nowhere.
  pool.reset();
  EXPECT_TRUE(at::equal(c->Find(0, Proj::kQ)->a_t, c_q));
  b.reset();
  c.reset();
}

TEST(LoraSlotPoolTest, AdaptersThatDoNotFitASlotKeepTheirOwnTensors) {
  auto pool = Pool(4, 8);
  ASSERT_NE(pool, nullptr);
  auto check = [&](AdapterWeights& w, const char* what) {
    auto placed = pool->Place(w);
    ASSERT_TRUE(placed.ok()) << placed.status();
    EXPECT_EQ(*placed, LoraSlotPool::Placement::kNotEligible) << what;
    EXPECT_EQ(w.pool_slot(), -1) << what;
  };
  auto high_rank = Lora(kAll, 8);  // rank 9 on layer 1's q
  check(*high_rank, "a rank above the slots'");
  auto half = Lora(kAll, 4, at::kBFloat16);
  check(*half, "another dtype");
  AdapterWeights ia3(kLayers, AdapterKind::kIa3);
  ia3.SetIa3(0, Proj::kK, Ia3Module{at::ones({kKvHeads * kHeadDim}), false});
  check(ia3, "IA3");
  AdapterWeights empty(kLayers);
  check(empty, "no LoRA module");
  auto component = Lora(kAll, 2);
  AdapterWeights composite(kLayers);
  composite.AddComposed(0, Proj::kQ, *component->Find(0, Proj::kQ));
  check(composite, "a composite");
  auto wrong_shape = std::make_shared<AdapterWeights>(kLayers);
  wrong_shape->Set(0, Proj::kO, LoraModule::FromPeft(at::randn({2, kHidden}), at::randn({kHidden, 2}), 1.0));
  check(*wrong_shape, "o_proj's input is not the hidden size here");
  auto other_depth = std::make_shared<AdapterWeights>(kLayers + 1);
  check(*other_depth, "another layer count");
  EXPECT_EQ(pool->used_slots(), 0);
}

TEST(LoraSlotPoolTest, BadSizesAreRefusedNamingTheFlags) {
  auto zero = LoraSlotPool::Create(Config(), 0, 8, at::kCPU, at::kFloat);
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(zero.status().message().find("--adapter_slots"), std::string::npos);
  auto rank = LoraSlotPool::Create(Config(), 2, 0, at::kCPU, at::kFloat);
  EXPECT_NE(rank.status().message().find("--adapter_slot_rank"), std::string::npos);
  auto huge = LoraSlotPool::Create(Config(), int64_t{1} << 40, 64, at::kCPU, at::kFloat);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(huge.status().message().find("could not be allocated"), std::string::npos) << huge.status();
}

}  // namespace
}  // namespace adapterd::model
