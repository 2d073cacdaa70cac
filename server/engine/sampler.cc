#include "server/engine/sampler.h"

#include <ATen/ATen.h>

#include <limits>
#include <random>

#include "server/model/row_argmax.h"

namespace adapterd::engine {
namespace {

// SplitMix64's finaliser: a bijection of 64-bit words whose outputs for
// consecutive inputs pass as independent uniform words.
uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <class T>
at::Tensor HostTensor(const std::vector<T>& v, at::ScalarType type, c10::Device device) {
  return at::from_blob(const_cast<T*>(v.data()), {static_cast<int64_t>(v.size())}, type).to(device, /*non_blocking=*/false,
                                                                                              /*copy=*/true);
}

// Each row's greedy token: our vectorised argmax where it takes the logits
// (float32 on the CPU), at::argmax elsewhere; the same indices.
at::Tensor Argmax(const at::Tensor& logits) {
  return model::RowArgmaxSupports(logits) ? model::RowArgmax(logits) : logits.argmax(1);
}

// What the rows that draw at random need, one entry per such row.
struct Draws {
  std::vector<int64_t> rows;
  std::vector<float> inv_temperature;
  std::vector<int64_t> top_k;   // the vocabulary size where off
  std::vector<float> top_p;     // 2 where off: no prefix's mass reaches it
  std::vector<double> uniform;  // in (0, 1)
  bool any_top_k = false, any_top_p = false;
};

// Tokens for the rows in `d`: temperature, then top-k (ties with the k-th
// kept), then top-p (the smallest set of the most likely tokens whose mass
// reaches p), then the token at which the filtered distribution's
// cumulative mass passes the row's uniform number: one pass of each over
// all rows, on the logits' device.
// `rows` holds d.rows on the logits' device.
at::Tensor DrawRows(const at::Tensor& logits, const at::Tensor& rows, const Draws& d) {
  const c10::Device dev = logits.device();
  const int64_t vocab = logits.size(1);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  at::Tensor l = logits.index_select(0, rows).to(at::kFloat) * HostTensor(d.inv_temperature, at::kFloat, dev).unsqueeze(1);
  if (d.any_top_k || d.any_top_p) {
    auto [sorted, order] = l.sort(/*dim=*/1, /*descending=*/true);
    if (d.any_top_k) {
      const at::Tensor kth = sorted.gather(1, (HostTensor(d.top_k, at::kLong, dev) - 1).unsqueeze(1));
      l = l.masked_fill(l < kth, neg_inf);
      sorted = sorted.masked_fill(sorted < kth, neg_inf);
    }
    if (d.any_top_p) {
      const at::Tensor probs = sorted.softmax(1);
      const at::Tensor before = probs.cumsum(1) - probs;  // mass of strictly more likely tokens
      const at::Tensor drop_sorted = before >= HostTensor(d.top_p, at::kFloat, dev).unsqueeze(1);
      l = l.masked_fill(at::zeros_like(drop_sorted).scatter(1, order, drop_sorted), neg_inf);
    }
  }
  const at::Tensor cdf = l.softmax(1).cumsum(1);
  const at::Tensor target = HostTensor(d.uniform, at::kDouble, dev).to(at::kFloat).unsqueeze(1) * cdf.narrow(1, vocab - 1, 1);
  return at::searchsorted(cdf, target).squeeze(1).clamp_max(vocab - 1);
}

}  // namespace

Sampler::Sampler(const SamplingParams& params)
    : params_(params), seed_(params.seed != 0 ? params.seed : std::random_device{}() | 1ull) {}

double Sampler::NextUniform() {
  const uint64_t word = Mix(seed_ + 0x9E3779B97F4A7C15ull * ++draws_);
  return (static_cast<double>(word >> 11) + 0.5) * 0x1.0p-53;
}

Sampler::Choice Sampler::Sample(const at::Tensor& logits) {
  Sampler* self = this;
  return SampleRows(logits.unsqueeze(0), std::span<Sampler* const>(&self, 1)).front();
}

std::vector<Sampler::Choice> Sampler::SampleRows(const at::Tensor& logits, std::span<Sampler* const> samplers) {
  const int64_t n = static_cast<int64_t>(samplers.size());
  const int64_t vocab = logits.size(1);
  std::vector<Choice> out(samplers.size());
  if (n == 0) return out;
  Draws d;
  std::vector<int64_t> with_logprobs;
  for (int64_t i = 0; i < n; ++i) {
    const SamplingParams& p = samplers[i]->params_;
    if (p.return_logprobs) with_logprobs.push_back(i);
    if (p.temperature == 0) continue;
    d.rows.push_back(i);
    d.inv_temperature.push_back(static_cast<float>(1.0 / p.temperature));
    const bool k_on = p.top_k > 0 && p.top_k < vocab;
    const bool p_on = p.top_p > 0 && p.top_p < 1;
    d.top_k.push_back(k_on ? p.top_k : vocab);
    d.top_p.push_back(p_on ? static_cast<float>(p.top_p) : 2.0f);
    d.any_top_k = d.any_top_k || k_on;
    d.any_top_p = d.any_top_p || p_on;
    d.uniform.push_back(samplers[i]->NextUniform());
  }
  // Greedy rows take the first maximum; drawn rows overwrite theirs.
  at::Tensor tokens = static_cast<int64_t>(d.rows.size()) == n ? at::empty({n}, logits.options().dtype(at::kLong))
                                                               : Argmax(logits);
  if (!d.rows.empty()) {
    const at::Tensor rows = HostTensor(d.rows, at::kLong, logits.device());
    tokens.index_copy_(0, rows, DrawRows(logits, rows, d));
  }
  // One copy of the step's tokens to the host.
  const at::Tensor host = tokens.to(at::kCPU).contiguous();
  const int64_t* t = host.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) out[i].token = t[i];
  if (!with_logprobs.empty()) {
    const at::Tensor rows = HostTensor(with_logprobs, at::kLong, logits.device());
    const at::Tensor lp = logits.index_select(0, rows)
                              .to(at::kFloat)
                              .log_softmax(1)
                              .gather(1, tokens.index_select(0, rows).unsqueeze(1))
                              .to(at::kCPU)
                              .contiguous();
    const float* p = lp.data_ptr<float>();
    for (size_t k = 0; k < with_logprobs.size(); ++k) out[with_logprobs[k]].logprob = p[k];
  }
  return out;
}

}  // namespace adapterd::engine
