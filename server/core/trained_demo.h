// The demo that speaks: a tokenizer, base weights and two LoRA adapters,
// trained at first start on the project's documentation.
#ifndef ADAPTERD_SERVER_CORE_TRAINED_DEMO_H_
#define ADAPTERD_SERVER_CORE_TRAINED_DEMO_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace adapterd::core {

struct TrainedDemo {
  // The checkpoint: config.json, generation_config.json, model.safetensors,
  // tokenizer.json and tokenizer_config.json (with the chat template).
  std::string model_dir;
  // {id, directory} of each PEFT LoRA adapter: "demo-qv-r4" (q/v, rank 4,
  // trained on SECURITY.md) and "demo-all-r8" (all seven projections, rank
  // 8, trained on docs/benchmarks.md).
  std::vector<std::pair<std::string, std::string>> adapters;
};

// Returns the trained demo under `cache_dir`, training it first when it is
// not there: the tokenizer on every embedded document
// (DemoDocuments()); the base model on the others (README.md and the docs
// the adapters do not take), plus one chat exchange per section heading
// (the heading asks, the section's first paragraph answers) so that it
// answers in its chat format; then the two adapters side by side, the base
// frozen. Training takes about a minute and runs on kDemoTrainingWorkers
// threads that each compute single-threaded, so the files depend on the
// embedded documents and the trainer only, not on the machine's cores.
//
// The result lives in `cache_dir`/demo-trained-<trainer version>-<hash of
// the documents>, so a changed trainer or changed documents train a new
// one. It appears atomically (built in a temporary directory, then
// renamed); concurrent callers, in this process or others, serialize on a
// lock file beside it and the later ones reuse the first one's result.
// Errors name the file or step that failed.
absl::StatusOr<TrainedDemo> EnsureTrainedDemo(const std::string& cache_dir);

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_TRAINED_DEMO_H_
