// Token selection for one sequence.
#ifndef ADAPTERD_SERVER_ENGINE_SAMPLER_H_
#define ADAPTERD_SERVER_ENGINE_SAMPLER_H_

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <span>
#include <vector>

#include "server/engine/request.h"

namespace adapterd::engine {

// Chooses the next token of one sequence from its logits: greedy when
// temperature is 0, else temperature, top-k and top-p filtering followed by a
// draw from the sequence's own generator, so that a seeded request gives the
// same tokens whatever else is in the batch. Not thread-safe.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  struct Choice {
    int64_t token = 0;
    float logprob = 0;  // log_softmax of the raw logits; set when return_logprobs
  };
  // `logits` is a float32 [vocab] row on the CPU.
  Choice Sample(const at::Tensor& logits);
  // What Sample() gives each row of `logits` [rows, vocab] (float32, CPU)
  // with samplers[i] for row i, but batched: the greedy rows take one
  // argmax over all of them, and the log-probabilities of the rows that
  // return them one log_softmax and one gather, each read once; only rows
  // that draw at random run on their own, each from its own generator.
  static std::vector<Choice> SampleRows(const at::Tensor& logits, std::span<Sampler* const> samplers);

  uint64_t seed() const { return seed_; }

 private:
  // A random draw from one row after temperature, top-k and top-p.
  int64_t Draw(const at::Tensor& logits);

  SamplingParams params_;
  uint64_t seed_;
  at::Generator generator_;
};

}  // namespace adapterd::engine

#endif  // ADAPTERD_SERVER_ENGINE_SAMPLER_H_
