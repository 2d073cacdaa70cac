// Next-token training with AdamW over a stream of token ids.
#ifndef ADAPTERD_SERVER_MODEL_LM_TRAINER_H_
#define ADAPTERD_SERVER_MODEL_LM_TRAINER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace adapterd::model {

struct TrainOptions {
  int64_t steps = 100;
  // Sequences per step, split evenly among the workers.
  int64_t batch_size = 8;
  // Tokens each sequence predicts; a sequence is seq_len + 1 consecutive ids.
  int64_t seq_len = 64;
  // Linear warm-up to learning_rate, then a cosine decay to
  // learning_rate * final_lr_fraction at the last step.
  double learning_rate = 3e-3;
  int64_t warmup_steps = 20;
  double final_lr_fraction = 0.1;
  // AdamW; the decoupled weight decay applies to parameters marked `decay`.
  double beta1 = 0.9, beta2 = 0.95, epsilon = 1e-8;
  double weight_decay = 0.0;
  // The gradient's global norm is clipped to this (0: no clipping).
  double max_grad_norm = 1.0;
  // Picks the sequences (uniformly placed windows of the stream).
  uint64_t seed = 1;
  // Data-parallel threads, each with batch_size / workers sequences. Their
  // gradients are summed in worker order, so the result depends on this
  // number and not on the machine.
  int workers = 1;
  // Names the run in log lines.
  std::string label = "training";
};

// A tensor to train: updated in place. It must not require grad itself.
struct TrainParam {
  at::Tensor tensor;
  bool decay = false;
};

// The mean loss of one batch of ids [b, seq_len + 1], computed from
// `params`: the trainer's parameters, in order, as tensors that share their
// storage and collect gradients of their own.
using BatchLoss = std::function<at::Tensor(std::span<const at::Tensor> params, const at::Tensor& ids)>;

struct TrainReport {
  double first_loss = 0;  // of the first step
  double final_loss = 0;  // mean of the last tenth of the steps
  int64_t tokens = 0;     // predicted, over all steps
  absl::Duration time;
};

// The loss that worker `worker` (of TrainOptions::workers) contributes at
// `step`, computed from `params` as BatchLoss says. Workers run at once, on
// threads of their own; the step's loss is their mean.
using StepLoss = std::function<at::Tensor(int worker, int64_t step, std::span<const at::Tensor> params)>;

// Minimises `loss` over `params` with AdamW for options.steps steps (the
// options' batch fields are unused): for objectives that see all their data
// every step. Errors as TrainNextToken's; `tokens` in the report is 0.
absl::StatusOr<TrainReport> Minimize(std::span<const TrainParam> params, const StepLoss& loss,
                                     const TrainOptions& options);

// Trains `params` to minimise `loss` over windows of `tokens` with AdamW
// (see TrainOptions). Everything it does is deterministic for given
// inputs, options and ATen thread count; the caller fixes the latter.
// INVALID_ARGUMENT for options that cannot work (a stream shorter than a
// sequence, a batch the workers cannot split evenly); INTERNAL, with
// LibTorch's message, when a step throws.
absl::StatusOr<TrainReport> TrainNextToken(std::span<const int32_t> tokens, std::span<const TrainParam> params,
                                           const BatchLoss& loss, const TrainOptions& options);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_LM_TRAINER_H_
