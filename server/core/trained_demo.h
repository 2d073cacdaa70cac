// The demo that speaks: a tokenizer, base weights and two LoRA adapters,
// trained at first start on the project's documentation.
#ifndef ADAPTERD_SERVER_CORE_TRAINED_DEMO_H_
#define ADAPTERD_SERVER_CORE_TRAINED_DEMO_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/demo_trainer.h"

namespace adapterd::core {

// The trained checkpoint's directory name, which the server also serves it
// under (the OpenAI API's `model`) unless --served_model_name says otherwise.
inline constexpr char kTrainedDemoName[] = "adapterd-demo";

struct TrainedDemo {
  // The checkpoint, `.../adapterd-demo`: config.json,
  // generation_config.json, model.safetensors, tokenizer.json and
  // tokenizer_config.json (with the chat template).
  std::string model_dir;
  // {id, directory} of each PEFT LoRA adapter: "demo-qv-r4" (q/v, rank 4,
  // trained on docs/chat_templates.md) and "demo-all-r8" (all seven
  // projections, rank 8, trained on SECURITY.md).
  std::vector<std::pair<std::string, std::string>> adapters;
};

// Returns the trained demo under `cache_dir`, training it first when it is
// not there. Everything is learnt from the prose of the embedded documents
// (DemoDocuments(), ProseParagraphs): the tokenizer from all of it; the base
// model from every paragraph (each one a sequence of its own, from BOS to
// EOS) and from one chat exchange per section heading (SectionExchanges,
// two to a conversation) so that it answers in its chat format; then each
// adapter, the base frozen, from its document's paragraphs, both at once.
// With the default `schedule` that takes about half a minute of two idle
// cores (a minute of CPU time), on kDemoTrainingWorkers threads that each
// compute single-threaded, so the files depend on the embedded documents,
// the schedule and the trainer only, not on the machine's cores.
//
// The result lives in `cache_dir`/demo-trained-<trainer version>-<hash of
// the documents and the schedule>, so changed documents, schedule or trainer
// train a new one. It appears atomically (built in a temporary directory,
// then renamed); concurrent callers, in this process or others, serialize
// on a lock file beside it and the later ones reuse the first one's result.
// Errors name the file or step that failed.
absl::StatusOr<TrainedDemo> EnsureTrainedDemo(const std::string& cache_dir,
                                              const model::DemoSchedule& schedule = {});

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_TRAINED_DEMO_H_
