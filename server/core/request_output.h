// How the core turns one request's tokens into what its transport sees.
#ifndef ADAPTERD_SERVER_CORE_REQUEST_OUTPUT_H_
#define ADAPTERD_SERVER_CORE_REQUEST_OUTPUT_H_

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "adapters/adapter_registry.h"
#include "server/core/generate_request.h"
#include "server/engine/request.h"
#include "server/metrics/adapter_metrics.h"
#include "server/text/incremental_decoder.h"
#include "server/text/stop_string_matcher.h"
#include "server/text/tokenizer.h"

namespace adapterd::core {

// The engine's sink for one request. It turns token ids into text deltas
// (when there is a tokenizer), holds back text that could still begin a
// stop string, asks the engine to stop once one matches, and when the
// request finishes does the per-adapter accounting and lets go of the
// adapter before the transport hears of the finish.
//
// Owned by the engine for the request's life; every call comes from the
// engine thread, so it needs no lock. The tokenizer, if any, and the
// metrics must outlive it.
class RequestOutput final : public engine::ResultSink {
 public:
  // `stops` is null when the request has no stop strings; `stop_strings`
  // are its strings, by the matcher's index.
  RequestOutput(std::shared_ptr<GenerateSink> out, const text::Tokenizer* tokenizer, bool skip_special_tokens,
                std::unique_ptr<text::StopStringMatcher> stops, std::vector<std::string> stop_strings,
                std::shared_ptr<const adapters::Adapter> adapter, metrics::AdapterMetrics* metrics);

  void OnTokens(std::span<const int64_t> tokens, std::span<const float> logprobs) override;
  void OnFinish(const engine::Finish& finish) override;
  bool StopRequested() const override { return matched_.has_value(); }

 private:
  // Passes `delta` through the stop strings; records a match.
  std::string Filter(const std::string& delta);

  const std::shared_ptr<GenerateSink> out_;
  std::optional<text::IncrementalDecoder> decoder_;  // none without a tokenizer
  const std::unique_ptr<text::StopStringMatcher> stops_;
  const std::vector<std::string> stop_strings_;
  std::shared_ptr<const adapters::Adapter> adapter_;
  metrics::AdapterMetrics* const metrics_;
  std::optional<size_t> matched_;  // index of the stop string that matched
};

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_REQUEST_OUTPUT_H_
