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

Sampler::Choice Sampler::Sample(const at::Tensor& logits) {
  Choice choice;
  if (params_.temperature == 0) {
    choice.token = logits.argmax().item<int64_t>();
  } else {
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
    choice.token = at::multinomial(probs, 1, /*replacement=*/false, generator_).item<int64_t>();
  }
  if (params_.return_logprobs) {
    choice.logprob = logits.log_softmax(0)[choice.token].item<float>();
  }
  return choice;
}

}  // namespace adapterd::engine
