// How the core turns a classification request's scores into its answer.
#ifndef ADAPTERD_SERVER_CORE_CLASSIFY_OUTPUT_H_
#define ADAPTERD_SERVER_CORE_CLASSIFY_OUTPUT_H_

#include <memory>
#include <span>
#include <vector>

#include "adapters/adapter_registry.h"
#include "server/core/classify_request.h"
#include "server/engine/request.h"
#include "server/metrics/adapter_metrics.h"

namespace adapterd::core {

// The engine's sink for one classification request. It keeps the head's
// raw scores, and when the request finishes it does the per-adapter
// accounting, lets go of the adapter, and gives the transport the labels
// with their logits and probabilities (softmax, or a sigmoid per label for
// multi-label adapters), or the error that ended the request.
//
// Owned by the engine for the request's life; every call comes from the
// engine thread, so it needs no lock. The metrics must outlive it.
class ClassifyOutput final : public engine::ResultSink {
 public:
  // `result` carries the prompt's token count and pooled index; the scores
  // are filled in here.
  ClassifyOutput(std::shared_ptr<ClassifySink> out, ClassifyResult result,
                 std::shared_ptr<const adapters::Adapter> adapter, metrics::AdapterMetrics* metrics);

  void OnTokens(std::span<const int64_t>, std::span<const float>) override {}
  void OnScores(std::span<const float> scores) override;
  void OnFinish(const engine::Finish& finish) override;

 private:
  const std::shared_ptr<ClassifySink> out_;
  ClassifyResult result_;
  std::shared_ptr<const adapters::Adapter> adapter_;
  metrics::AdapterMetrics* const metrics_;
  std::vector<float> scores_;
};

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_CLASSIFY_OUTPUT_H_
