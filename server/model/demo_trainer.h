// Training the demo checkpoint and its LoRA adapters from token streams.
#ifndef ADAPTERD_SERVER_MODEL_DEMO_TRAINER_H_
#define ADAPTERD_SERVER_MODEL_DEMO_TRAINER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/adapter_weights.h"
#include "server/model/lm_trainer.h"
#include "server/model/trainable_llama.h"

namespace adapterd::model {

// The threads that train the demo: the base model is trained by this many
// data-parallel workers, each adapter by one (so the two demo adapters can
// train side by side). Every worker computes on one thread: the caller
// pins ATen and BLAS to one thread (ScopedComputeThreads(1)) for the
// duration, so the weights depend on the seeds and the text only, not on
// the machine's core count.
inline constexpr int kDemoTrainingWorkers = 2;

// How long the demo trains, and from which seed. The default is the demo
// that EnsureTrainedDemo serves; tests train shorter ones.
struct DemoSchedule {
  // The initial weights; the base model's batches use seed + 1, each
  // adapter's initialisation and batches seed + its DemoLoraSpec::seed.
  uint64_t seed = 20260115;
  // Steps of the bigram phase, of the base model's phase and of each
  // adapter (see TrainDemoModel); 0 bigram steps skips that phase.
  int64_t bigram_steps = 60;
  int64_t base_steps = 300;
  int64_t lora_steps = 60;
};

struct DemoLoraSpec {
  int64_t r = 4;
  double alpha = 8;
  std::vector<Proj> targets;
  uint64_t seed = 1;  // added to DemoSchedule::seed
};

// The demo model (DemoConfigJson) trained on `tokens` with next-token
// cross-entropy and AdamW, from a seeded start in which o_proj and
// down_proj are zero (each layer is the identity): first the embeddings and
// lm_head alone on the counts of the stream's token pairs (the whole
// model's loss while the layers add nothing; full batch, so it converges in
// a few seconds), then every weight on windows of the stream. Batch sizes
// and learning rates are fixed in the source. Returns the weights in
// LlamaTensorNames order; `report` (optional) gets the second phase's
// losses and time. The same tokens, schedule and worker count
// (kDemoTrainingWorkers, each computing on one thread) give the same bits.
absl::StatusOr<NamedTensors> TrainDemoModel(std::span<const int32_t> tokens, const DemoSchedule& schedule,
                                            TrainReport* report);

// A LoRA adapter of `base` (frozen) trained on `tokens` as `spec` says for
// schedule.lora_steps, on one worker, initialised as PEFT does (A uniform in
// +-1/sqrt(in), B zero) and named as PEFT saves it
// ("base_model.model.model.layers.N.<module>.lora_A.weight").
absl::StatusOr<NamedTensors> TrainDemoLora(const NamedTensors& base, std::span<const int32_t> tokens,
                                           const DemoLoraSpec& spec, const DemoSchedule& schedule,
                                           TrainReport* report);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_DEMO_TRAINER_H_
