// Token selection for one sequence.
#ifndef ADAPTERD_SERVER_ENGINE_SAMPLER_H_
#define ADAPTERD_SERVER_ENGINE_SAMPLER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <span>
#include <vector>

#include "server/engine/request.h"

namespace adapterd::engine {

// Chooses the next token of one sequence from its logits: greedy when
// temperature is 0, else temperature, top-k and top-p filtering followed by a
// draw. The draw reads one uniform number made from the sequence's seed and
// its count of draws (no generator object, nothing on the device), so a
// seeded request gives the same tokens whatever else is in the batch and
// on whatever device its logits are. Not thread-safe.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  struct Choice {
    int64_t token = 0;
    float logprob = 0;  // log_softmax of the raw logits; set when return_logprobs
  };
  // `logits` is one [vocab] row, on any device.
  Choice Sample(const at::Tensor& logits);
  // What Sample() gives each row of `logits` [rows, vocab] (any device and
  // floating dtype) with samplers[i] for row i, batched: one argmax for the
  // greedy rows, one pass of each filter for the rows that draw, one
  // log_softmax and gather for the rows that return log-probabilities, and
  // one copy of the step's tokens to the host (a second for the
  // log-probabilities, when any row asks). Nothing runs per row.
  static std::vector<Choice> SampleRows(const at::Tensor& logits, std::span<Sampler* const> samplers);

  uint64_t seed() const { return seed_; }

 private:
  // The uniform number in (0, 1) of this sequence's next draw.
  double NextUniform();

  SamplingParams params_;
  uint64_t seed_;
  uint64_t draws_ = 0;
};

}  // namespace adapterd::engine

#endif  // ADAPTERD_SERVER_ENGINE_SAMPLER_H_
