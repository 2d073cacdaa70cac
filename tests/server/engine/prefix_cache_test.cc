// Shared KV blocks in the engine: the prefix cache (on equals off, keyed by
// adapter instance, copy-on-write, preemption, eviction) and prefix tuning's
// shared prefix blocks. The outputs compared here are the engine's own with
// the cache off: the cache must never change a token.
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/engine.h"
#include "server/model/adapter_lease.h"
#include "server/model/demo_checkpoint.h"
#include "tests/support/reference_outputs.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd::engine {
namespace {

using Sink = testing::CollectingSink;

std::string DemoDir() {
  static const std::string* dir = [] {
    auto d = model::EnsureDemoCheckpoint(testing::MakeTempDir("prefix-cache-demo"));
    EXPECT_TRUE(d.ok()) << d.status();
    return new std::string(d.ok() ? *d : "");
  }();
  return *dir;
}

std::unique_ptr<Engine> MakeEngine(bool caching, int64_t kv_blocks = 0) {
  auto m = model::LlamaModel::Load(DemoDir(), {});
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  EngineOptions o;
  o.prefix_caching = caching;
  o.load_join_wait = 0;
  if (kv_blocks > 0) o.kv_cache_bytes = kv_blocks * model::KvCache::BytesPerBlock((*m)->config(), 16, at::kFloat);
  auto e = Engine::Create(*std::move(m), o, nullptr);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *std::move(e) : nullptr;
}

const model::ModelConfig& DemoConfig() {
  static const model::ModelConfig* c = [] {
    auto m = model::LlamaModel::Load(DemoDir(), {});
    EXPECT_TRUE(m.ok());
    return new model::ModelConfig((*m)->config());
  }();
  return *c;
}

// A LoRA on q, k and v of every layer, random and large enough to move the output.
std::shared_ptr<model::AdapterWeights> RandomLora(uint64_t seed) {
  const model::ModelConfig& c = DemoConfig();
  auto w = std::make_shared<model::AdapterWeights>(c.num_layers);
  at::manual_seed(seed);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (model::Proj p : {model::Proj::kQ, model::Proj::kK, model::Proj::kV}) {
      const int64_t out = p == model::Proj::kQ ? c.num_heads * c.head_dim : c.num_kv_heads * c.head_dim;
      w->Set(l, p, model::LoraModule::FromPeft(at::randn({4, c.hidden_size}) * 0.2, at::randn({out, 4}) * 0.2, 2.0));
    }
  }
  return w;
}

// Prefix tuning with `n` random prefix positions.
std::shared_ptr<model::AdapterWeights> RandomPrefix(int64_t n, uint64_t seed) {
  const model::ModelConfig& c = DemoConfig();
  auto w = std::make_shared<model::AdapterWeights>(c.num_layers, model::AdapterKind::kPrefixTuning);
  at::manual_seed(seed);
  w->SetPrefixKv(at::randn({c.num_layers, 2, n, c.num_kv_heads, c.head_dim}));
  return w;
}

std::vector<int64_t> Prompt(int n, int salt = 0) {
  std::vector<int64_t> p;
  for (int i = 0; i < n; ++i) p.push_back(3 + (i * 37 + salt * 11) % 1900);
  return p;
}

GenerationRequest Request(std::vector<int64_t> prompt, std::shared_ptr<const model::AdapterWeights> w,
                          int64_t n = 12) {
  GenerationRequest r;
  r.id = "p";
  r.prompt = std::move(prompt);
  r.sampling.max_new_tokens = n;
  r.sampling.ignore_eos = true;
  r.adapter = model::LeaseResident("a", std::move(w));
  return r;
}

// Waits until the engine has published the stats of the step that ended
// its last request (running is published last).
void Settle(Engine& e) {
  testing::PollUntil(
      [&] {
        const Engine::Stats s = e.GetStats();
        return s.running == 0 && s.waiting == 0;
      },
      "the engine to publish its idle stats");
}

std::vector<int64_t> Generate(Engine& e, GenerationRequest r) {
  auto s = std::make_shared<Sink>();
  EXPECT_TRUE(e.Submit(std::move(r), s).ok());
  EXPECT_TRUE(testing::Await(s->done, "the request to finish"));
  EXPECT_TRUE(s->finish.status.ok()) << s->finish.status;
  Settle(e);
  return s->tokens;
}

TEST(PrefixCacheTest, OutputsWithTheCacheOnEqualThoseWithItOff) {
  auto off = MakeEngine(false), on = MakeEngine(true);
  ASSERT_NE(off, nullptr);
  ASSERT_NE(on, nullptr);
  auto lora1 = RandomLora(1), lora2 = RandomLora(2);
  const std::vector<int64_t> prompt = Prompt(40);  // two full blocks and 8 tokens
  std::vector<std::shared_ptr<const model::AdapterWeights>> adapters = {nullptr, lora1, lora2};
  for (size_t i = 0; i < adapters.size(); ++i) {
    SCOPED_TRACE(i);
    const std::vector<int64_t> want = Generate(*off, Request(prompt, adapters[i]));
    const Engine::Stats before = on->GetStats();
    // The first run of this adapter finds nothing: the blocks the others
    // cached for the same tokens are theirs.
    EXPECT_EQ(Generate(*on, Request(prompt, adapters[i])), want);
    const Engine::Stats first = on->GetStats();
    EXPECT_EQ(first.prefix_hit_tokens, before.prefix_hit_tokens);
    EXPECT_EQ(first.prefix_queried_tokens - before.prefix_queried_tokens, 40);
    // The second takes the two full blocks.
    EXPECT_EQ(Generate(*on, Request(prompt, adapters[i])), want);
    EXPECT_EQ(on->GetStats().prefix_hit_tokens - first.prefix_hit_tokens, 32);
    // A prompt that shares only the first block takes only that one.
    std::vector<int64_t> other = prompt;
    other[20] += 1;
    EXPECT_EQ(Generate(*on, Request(other, adapters[i])), Generate(*off, Request(other, adapters[i])));
  }
  EXPECT_EQ(off->GetStats().prefix_hit_tokens, 0);
}

TEST(PrefixCacheTest, AFullyCachedPromptCopiesItsLastBlockBeforeWriting) {
  auto off = MakeEngine(false), on = MakeEngine(true);
  ASSERT_NE(off, nullptr);
  ASSERT_NE(on, nullptr);
  const std::vector<int64_t> prompt = Prompt(32);  // exactly two blocks
  const std::vector<int64_t> want = Generate(*off, Request(prompt, nullptr));
  EXPECT_EQ(Generate(*on, Request(prompt, nullptr)), want);
  const Engine::Stats first = on->GetStats();
  EXPECT_EQ(first.kv_copies, 0);
  EXPECT_EQ(Generate(*on, Request(prompt, nullptr)), want);
  const Engine::Stats second = on->GetStats();
  // All 32 matched; the last token is recomputed in a copy of the last block.
  EXPECT_EQ(second.prefix_hit_tokens - first.prefix_hit_tokens, 31);
  EXPECT_EQ(second.kv_copies, 1);
  EXPECT_EQ(Generate(*on, Request(prompt, nullptr)), want);  // the cached block itself was not overwritten
}

TEST(PrefixCacheTest, AReplacedAdaptersBlocksAreNeverServedAndGoAwayWithIt) {
  auto off = MakeEngine(false), on = MakeEngine(true);
  ASSERT_NE(off, nullptr);
  ASSERT_NE(on, nullptr);
  const std::vector<int64_t> prompt = Prompt(48, 3);
  auto old_version = RandomLora(7);
  EXPECT_EQ(Generate(*on, Request(prompt, old_version)), Generate(*off, Request(prompt, old_version)));
  const int64_t cached = on->GetStats().prefix_cached_blocks;
  EXPECT_GE(cached, 3);
  // "Replace": the old weights go away and new ones serve the same id.
  old_version.reset();
  auto new_version = RandomLora(8);
  const Engine::Stats before = on->GetStats();
  EXPECT_EQ(Generate(*on, Request(prompt, new_version)), Generate(*off, Request(prompt, new_version)));
  const Engine::Stats after = on->GetStats();
  EXPECT_EQ(after.prefix_hit_tokens, before.prefix_hit_tokens);
  // The old version's blocks were dropped; the new version's are cached.
  EXPECT_EQ(after.prefix_cached_blocks, cached);
  new_version.reset();
  Generate(*on, Request(Prompt(3), nullptr));  // a step drops the expired adapter's blocks
  EXPECT_EQ(on->GetStats().prefix_cached_blocks, 0);
}

TEST(PrefixCacheTest, PreemptedSequencesResumeFromTheCacheWithUnchangedOutputs) {
  auto off = MakeEngine(false);
  // Each request grows to 4 blocks, 2 of them the shared prompt's. Any two
  // requests of different adapters in flight together need 8 blocks, so 7
  // preempt however the engine's steps interleave with the submissions.
  auto on = MakeEngine(true, /*kv_blocks=*/7);
  ASSERT_NE(off, nullptr);
  ASSERT_NE(on, nullptr);
  std::vector<GenerationRequest> reqs;
  auto lora = RandomLora(3);
  for (int i = 0; i < 4; ++i) {
    std::vector<int64_t> p = Prompt(33);  // a shared system prompt, then a per-request tail
    for (int64_t t : Prompt(5, i + 1)) p.push_back(t);
    reqs.push_back(Request(p, i % 2 == 0 ? nullptr : lora, 24));
  }
  std::vector<std::vector<int64_t>> want;
  for (const auto& r : reqs) want.push_back(Generate(*off, r));
  std::vector<std::shared_ptr<Sink>> sinks;
  for (const auto& r : reqs) {
    sinks.push_back(std::make_shared<Sink>());
    ASSERT_TRUE(on->Submit(r, sinks.back()).ok());
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(testing::Await(sinks[i]->done, "a request to finish"));
    EXPECT_EQ(sinks[i]->tokens, want[i]) << "request " << i;
  }
  Settle(*on);
  const Engine::Stats s = on->GetStats();
  EXPECT_GT(s.preemptions, 0);
  EXPECT_GT(s.prefix_hit_tokens, 0);
}

TEST(PrefixCacheTest, IdleCachedBlocksAreReclaimedWhenThePoolRunsShort) {
  auto off = MakeEngine(false);
  auto on = MakeEngine(true, /*kv_blocks=*/8);
  ASSERT_NE(off, nullptr);
  ASSERT_NE(on, nullptr);
  // Each prompt leaves 4 full blocks cached; the pool holds 8.
  for (int i = 0; i < 4; ++i) {
    const std::vector<int64_t> p = Prompt(70, i);
    EXPECT_EQ(Generate(*on, Request(p, nullptr, 4)), Generate(*off, Request(p, nullptr, 4))) << i;
    EXPECT_LE(on->GetStats().prefix_cached_blocks, 8);
  }
  EXPECT_EQ(on->GetStats().preemptions, 0);
}

TEST(PrefixTuningBlocksTest, SequencesShareTheAdaptersPrefixBlocksAndCopyThePartialOne) {
  auto e = MakeEngine(false);
  ASSERT_NE(e, nullptr);
  for (int64_t n : {5, 16, 21}) {
    SCOPED_TRACE(n);
    auto prefix = RandomPrefix(n, static_cast<uint64_t>(n));
    std::vector<std::vector<int64_t>> alone;
    for (int i = 0; i < 3; ++i) alone.push_back(Generate(*e, Request(Prompt(7 + i, i), prefix)));
    EXPECT_NE(alone[0], Generate(*e, Request(Prompt(7, 0), nullptr)));  // the prefix matters
    const int64_t copies = e->GetStats().kv_copies;
    std::vector<std::shared_ptr<Sink>> sinks;
    for (int i = 0; i < 3; ++i) {
      sinks.push_back(std::make_shared<Sink>());
      ASSERT_TRUE(e->Submit(Request(Prompt(7 + i, i), prefix), sinks.back()).ok());
    }
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(testing::Await(sinks[i]->done, "a request to finish"));
      EXPECT_EQ(sinks[i]->tokens, alone[i]);
      EXPECT_EQ(sinks[i]->finish.virtual_tokens, n);
    }
    Settle(*e);
    // Each sequence copies the prefix's partial last block; a prefix of
    // whole blocks is never copied.
    EXPECT_EQ(e->GetStats().kv_copies - copies, n % 16 == 0 ? 0 : 3);
    // The prefix's blocks go away with the adapter.
    prefix.reset();
    Generate(*e, Request(Prompt(2), nullptr, 1));
    EXPECT_EQ(e->GetStats().kv_free_blocks, e->GetStats().kv_total_blocks);
  }
}

}  // namespace
}  // namespace adapterd::engine
