#include "server/engine/sampler.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace adapterd::engine {
namespace {

at::Tensor Logits(std::vector<float> v) { return at::tensor(v, at::kFloat); }

TEST(SamplerTest, GreedyPicksTheArgmax) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  EXPECT_EQ(s.Sample(Logits({0.1f, 2.5f, -1.0f, 2.4f})).token, 1);
  EXPECT_EQ(s.Sample(Logits({5.0f, 2.5f, -1.0f, 2.4f})).token, 0);
}

TEST(SamplerTest, LogprobIsLogSoftmaxOfRawLogits) {
  SamplingParams p;
  p.return_logprobs = true;
  p.temperature = 0;
  Sampler s(p);
  at::Tensor l = Logits({1.0f, 3.0f, 0.5f});
  Sampler::Choice c = s.Sample(l);
  EXPECT_EQ(c.token, 1);
  const double denom = std::exp(1.0) + std::exp(3.0) + std::exp(0.5);
  EXPECT_NEAR(c.logprob, 3.0 - std::log(denom), 1e-6);
}

TEST(SamplerTest, TopKOneAndTinyTopPAreGreedy) {
  at::Tensor l = Logits({0.0f, 1.0f, 0.9f, 0.95f});
  SamplingParams k;
  k.temperature = 2.0;
  k.top_k = 1;
  k.seed = 7;
  Sampler sk(k);
  SamplingParams p;
  p.temperature = 2.0;
  p.top_p = 0.01;
  p.seed = 7;
  Sampler sp(p);
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(sk.Sample(l).token, 1);
    EXPECT_EQ(sp.Sample(l).token, 1);
  }
}

TEST(SamplerTest, TopKRestrictsToTheKBest) {
  SamplingParams p;
  p.temperature = 1.0;
  p.top_k = 2;
  p.seed = 11;
  Sampler s(p);
  std::set<int64_t> seen;
  for (int i = 0; i < 500; ++i) seen.insert(s.Sample(Logits({0.0f, 1.0f, 1.0f, 0.5f})).token);
  EXPECT_EQ(seen, (std::set<int64_t>{1, 2}));
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  // probs ~ [0.5, 0.3, 0.2]: top_p 0.7 keeps {0, 1}; 0.85 keeps all three.
  at::Tensor l = Logits({std::log(0.5f), std::log(0.3f), std::log(0.2f)});
  SamplingParams p;
  p.temperature = 1.0;
  p.top_p = 0.7;
  p.seed = 3;
  Sampler s(p);
  std::set<int64_t> seen;
  for (int i = 0; i < 500; ++i) seen.insert(s.Sample(l).token);
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1}));
  p.top_p = 0.85;
  Sampler all(p);
  seen.clear();
  for (int i = 0; i < 500; ++i) seen.insert(all.Sample(l).token);
  EXPECT_EQ(seen, (std::set<int64_t>{0, 1, 2}));
}

TEST(SamplerTest, FollowsTheDistribution) {
  SamplingParams p;
  p.temperature = 1.0;
  p.seed = 42;
  Sampler s(p);
  at::Tensor l = Logits({std::log(0.7f), std::log(0.3f)});
  int ones = 0;
  const int n = 4000;
  for (int i = 0; i < n; ++i) ones += s.Sample(l).token == 1;
  // 0.3 +- 5 standard deviations (sd ~ 0.0072).
  EXPECT_NEAR(static_cast<double>(ones) / n, 0.3, 0.036);
}

TEST(SamplerTest, SeedMakesDrawsReproducible) {
  at::Tensor l = at::zeros({100});
  SamplingParams p;
  p.temperature = 1.0;
  p.seed = 99;
  Sampler a(p), b(p);
  p.seed = 100;
  Sampler c(p);
  std::vector<int64_t> ta, tb, tc;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.Sample(l).token);
    tb.push_back(b.Sample(l).token);
    tc.push_back(c.Sample(l).token);
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(SamplerTest, ZeroSeedPicksARandomSeed) {
  SamplingParams p;
  p.temperature = 1.0;
  Sampler a(p), b(p);
  EXPECT_NE(a.seed(), 0u);
  EXPECT_NE(a.seed(), b.seed());
}

// The batched path gives every row what Sample() gives it alone: greedy
// and seeded rows, with and without log-probabilities, in any mix; with
// ties broken the same way (the first maximum).
TEST(SamplerTest, SampleRowsMatchesSamplePerRow) {
  at::manual_seed(3);
  const int64_t rows = 9, vocab = 50;
  at::Tensor logits = at::randn({rows, vocab}) * 3;
  logits.select(0, 4).fill_(1.0f);  // all tied: the first index wins
  std::vector<SamplingParams> params(rows);
  for (int64_t i = 0; i < rows; ++i) {
    params[i].temperature = i % 3 == 0 ? 0.8 : 0;
    params[i].top_k = i == 3 ? 5 : 0;
    params[i].top_p = i == 6 ? 0.9 : 0;
    params[i].seed = 1000 + static_cast<uint64_t>(i);
    params[i].return_logprobs = i % 2 == 0;
  }
  for (int round = 0; round < 20; ++round) {
    std::vector<Sampler> batched, alone;
    for (const SamplingParams& p : params) {
      batched.emplace_back(p);
      alone.emplace_back(p);
    }
    std::vector<Sampler*> ptrs;
    for (Sampler& s : batched) ptrs.push_back(&s);
    for (int step = 0; step < 3; ++step) {
      const std::vector<Sampler::Choice> got = Sampler::SampleRows(logits, ptrs);
      ASSERT_EQ(got.size(), static_cast<size_t>(rows));
      for (int64_t i = 0; i < rows; ++i) {
        const Sampler::Choice want = alone[i].Sample(logits.select(0, i));
        EXPECT_EQ(got[i].token, want.token) << "row " << i << " step " << step;
        if (params[i].return_logprobs) EXPECT_NEAR(got[i].logprob, want.logprob, 1e-5) << "row " << i;
      }
    }
    logits = logits.roll(1, 1);
  }
  EXPECT_EQ(Sampler::SampleRows(logits.narrow(0, 0, 0), {}).size(), 0u);
}

// One row's distribution after temperature, top-k (ties with the k-th
// kept) and top-p (the most likely tokens, in order, until their mass
// reaches p), computed here in double with plain loops.
std::vector<double> Filtered(const std::vector<float>& logits, const SamplingParams& p) {
  const size_t vocab = logits.size();
  std::vector<double> l(vocab);
  for (size_t i = 0; i < vocab; ++i) l[i] = logits[i] / p.temperature;
  std::vector<size_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return l[a] > l[b]; });
  std::vector<bool> keep(vocab, true);
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < vocab) {
    const double kth = l[order[p.top_k - 1]];
    for (size_t i = 0; i < vocab; ++i) keep[i] = l[i] >= kth;
  }
  const auto normalised = [&] {
    std::vector<double> w(vocab, 0.0);
    double sum = 0;
    for (size_t i = 0; i < vocab; ++i) sum += keep[i] ? std::exp(l[i]) : 0.0;
    for (size_t i = 0; i < vocab; ++i) w[i] = keep[i] ? std::exp(l[i]) / sum : 0.0;
    return w;
  };
  if (p.top_p > 0 && p.top_p < 1) {
    const std::vector<double> w = normalised();
    double before = 0;
    for (size_t j : order) {
      if (!keep[j]) continue;
      if (before >= p.top_p) keep[j] = false;
      before += w[j];
    }
  }
  return normalised();
}

// Rows with different filters, drawn together step after step: each row's
// tokens follow its own filtered distribution (every frequency within five
// standard deviations), and filtered-out tokens never come.
TEST(SamplerTest, BatchedDrawsFollowEachRowsDistribution) {
  const std::vector<float> logits = {2.0f, 1.0f, 0.5f, 0.5f, -1.0f, 0.0f};
  std::vector<SamplingParams> params(4);
  params[0].temperature = 1.0;
  params[1].temperature = 0.5;
  params[1].top_k = 3;
  params[2].temperature = 1.5;
  params[2].top_p = 0.8;
  params[3].temperature = 1.0;
  params[3].top_k = 4;
  params[3].top_p = 0.6;
  std::vector<Sampler> samplers;
  std::vector<Sampler*> ptrs;
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].seed = 500 + i;
    samplers.emplace_back(params[i]);
  }
  for (Sampler& s : samplers) ptrs.push_back(&s);
  const int64_t rows = static_cast<int64_t>(params.size()), vocab = static_cast<int64_t>(logits.size());
  const at::Tensor batch = at::tensor(logits, at::kFloat).unsqueeze(0).expand({rows, vocab}).contiguous();
  const int n = 3000;
  std::vector<std::vector<int>> counts(params.size(), std::vector<int>(logits.size(), 0));
  for (int step = 0; step < n; ++step) {
    const std::vector<Sampler::Choice> got = Sampler::SampleRows(batch, ptrs);
    for (size_t r = 0; r < got.size(); ++r) {
      ASSERT_GE(got[r].token, 0);
      ASSERT_LT(got[r].token, vocab);
      ++counts[r][got[r].token];
    }
  }
  for (size_t r = 0; r < params.size(); ++r) {
    const std::vector<double> want = Filtered(logits, params[r]);
    for (size_t t = 0; t < logits.size(); ++t) {
      const double freq = static_cast<double>(counts[r][t]) / n;
      if (want[t] == 0) {
        EXPECT_EQ(counts[r][t], 0) << "row " << r << " token " << t << " is filtered out";
        continue;
      }
      EXPECT_NEAR(freq, want[t], 5 * std::sqrt(want[t] * (1 - want[t]) / n)) << "row " << r << " token " << t;
    }
  }
}

// Half-precision logits (as a bf16 model's head gives them) are filtered
// and drawn from in float32: the same tokens as from their float32 copy.
TEST(SamplerTest, HalfPrecisionLogitsDrawAsTheirFloatCopy) {
  at::manual_seed(5);
  const at::Tensor logits = (at::randn({6, 40}) * 2).to(at::kBFloat16);
  std::vector<SamplingParams> params(6);
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].temperature = i % 2 == 0 ? 0.7 : 0;
    params[i].top_k = i == 2 ? 10 : 0;
    params[i].top_p = i == 4 ? 0.9 : 0;
    params[i].seed = 70 + i;
    params[i].return_logprobs = true;
  }
  std::vector<Sampler> half, full;
  for (const SamplingParams& p : params) {
    half.emplace_back(p);
    full.emplace_back(p);
  }
  std::vector<Sampler*> hp, fp;
  for (size_t i = 0; i < params.size(); ++i) {
    hp.push_back(&half[i]);
    fp.push_back(&full[i]);
  }
  for (int step = 0; step < 20; ++step) {
    const std::vector<Sampler::Choice> a = Sampler::SampleRows(logits, hp);
    const std::vector<Sampler::Choice> b = Sampler::SampleRows(logits.to(at::kFloat), fp);
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_EQ(a[i].token, b[i].token) << "row " << i << " step " << step;
      EXPECT_FLOAT_EQ(a[i].logprob, b[i].logprob) << "row " << i << " step " << step;
    }
  }
}

}  // namespace
}  // namespace adapterd::engine
