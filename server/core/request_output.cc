#include "server/core/request_output.h"

#include <utility>

namespace adapterd::core {

RequestOutput::RequestOutput(std::shared_ptr<GenerateSink> out, const text::Tokenizer* tokenizer,
                             bool skip_special_tokens, std::unique_ptr<text::StopStringMatcher> stops,
                             std::vector<std::string> stop_strings, std::shared_ptr<const adapters::Adapter> adapter,
                             metrics::AdapterMetrics* metrics)
    : out_(std::move(out)), stops_(std::move(stops)), stop_strings_(std::move(stop_strings)),
      adapter_(std::move(adapter)), metrics_(metrics) {
  if (tokenizer != nullptr) decoder_.emplace(*tokenizer, skip_special_tokens);
}

std::string RequestOutput::Filter(const std::string& delta) {
  if (stops_ == nullptr || matched_.has_value()) return matched_.has_value() ? std::string() : delta;
  text::StopStringMatcher::Result r = stops_->Feed(delta);
  if (r.matched.has_value()) matched_ = r.matched;
  return std::move(r.text);
}

void RequestOutput::OnTokens(std::span<const int64_t> tokens, std::span<const float> logprobs) {
  std::string text;
  if (decoder_.has_value() && !matched_.has_value()) {
    std::string delta;
    for (int64_t t : tokens) delta += decoder_->Push(static_cast<int32_t>(t));
    text = Filter(delta);
  }
  out_->OnChunk(GenerateChunk{tokens, logprobs, text});
}

void RequestOutput::OnFinish(const engine::Finish& finish) {
  GenerateFinish f{finish, std::nullopt};
  if (decoder_.has_value() && !matched_.has_value()) {
    std::string tail = Filter(decoder_->Finish());
    if (stops_ != nullptr && !matched_.has_value()) tail += stops_->Flush();
    if (!tail.empty()) out_->OnChunk(GenerateChunk{{}, {}, tail});
  }
  if (matched_.has_value() && f.finish.status.ok()) {
    f.finish.reason = engine::FinishReason::kStop;
    f.stop_string = stop_strings_[*matched_];
  }
  if (adapter_ != nullptr) adapter_->RecordRequest(finish.completion_tokens);
  if (metrics_ != nullptr) metrics_->RecordAdapterRequest(adapter_ ? adapter_->id() : "", finish.completion_tokens);
  adapter_.reset();
  out_->OnFinish(f);
}

}  // namespace adapterd::core
