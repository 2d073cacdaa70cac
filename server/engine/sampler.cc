#include "server/engine/sampler.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <limits>
#include <random>

namespace adapterd::engine {

Sampler::Sampler(const SamplingParams& params)
    : params_(params),
      seed_(params.seed != 0 ? params.seed : std::random_device{}() | 1ull),
      generator_(at::make_generator<at::CPUGeneratorImpl>(seed_)) {}

int64_t Sampler::Draw(const at::Tensor& logits) {
  at::Tensor l = logits / params_.temperature;
  const int64_t vocab = l.size(0);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (params_.top_k > 0 && params_.top_k < vocab) {
    at::Tensor kth = std::get<0>(l.topk(params_.top_k)).select(0, params_.top_k - 1);
    l = l.masked_fill(l < kth, neg_inf);
  }
  if (params_.top_p > 0 && params_.top_p < 1) {
    auto [sorted, order] = l.sort(/*dim=*/0, /*descending=*/true);
    at::Tensor probs = sorted.softmax(0);
    at::Tensor before = probs.cumsum(0) - probs;  // mass of strictly more likely tokens
    at::Tensor drop_sorted = before >= params_.top_p;
    at::Tensor drop = at::zeros_like(drop_sorted).scatter(0, order, drop_sorted);
    l = l.masked_fill(drop, neg_inf);
  }
  at::Tensor probs = l.softmax(0);
  return at::multinomial(probs, 1, /*replacement=*/false, generator_).item<int64_t>();
}

Sampler::Choice Sampler::Sample(const at::Tensor& logits) {
  Choice choice;
  choice.token = params_.temperature == 0 ? logits.argmax().item<int64_t>() : Draw(logits);
  if (params_.return_logprobs) {
    choice.logprob = logits.log_softmax(0)[choice.token].item<float>();
  }
  return choice;
}

namespace {

at::Tensor Rows(const std::vector<int64_t>& rows) {
  return at::from_blob(const_cast<int64_t*>(rows.data()), {static_cast<int64_t>(rows.size())}, at::kLong).clone();
}

}  // namespace

std::vector<Sampler::Choice> Sampler::SampleRows(const at::Tensor& logits, std::span<Sampler* const> samplers) {
  const int64_t n = static_cast<int64_t>(samplers.size());
  std::vector<Choice> out(samplers.size());
  std::vector<int64_t> greedy, with_logprobs;
  for (int64_t i = 0; i < n; ++i) {
    if (samplers[i]->params_.temperature == 0) {
      greedy.push_back(i);
    } else {
      out[i].token = samplers[i]->Draw(logits.select(0, i));
    }
    if (samplers[i]->params_.return_logprobs) with_logprobs.push_back(i);
  }
  if (!greedy.empty()) {
    const at::Tensor picked = static_cast<int64_t>(greedy.size()) == n ? logits : logits.index_select(0, Rows(greedy));
    const at::Tensor best = picked.argmax(1).contiguous();
    const int64_t* p = best.data_ptr<int64_t>();
    for (size_t k = 0; k < greedy.size(); ++k) out[greedy[k]].token = p[k];
  }
  if (!with_logprobs.empty()) {
    std::vector<int64_t> tokens;
    tokens.reserve(with_logprobs.size());
    for (int64_t i : with_logprobs) tokens.push_back(out[i].token);
    const at::Tensor rows = logits.index_select(0, Rows(with_logprobs)).log_softmax(1);
    const at::Tensor lp = rows.gather(1, Rows(tokens).unsqueeze(1)).contiguous();
    const float* p = lp.data_ptr<float>();
    for (size_t k = 0; k < with_logprobs.size(); ++k) out[with_logprobs[k]].logprob = p[k];
  }
  return out;
}

}  // namespace adapterd::engine
