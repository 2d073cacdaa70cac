#include "server/core/classify_output.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace adapterd::core {

ClassifyOutput::ClassifyOutput(std::shared_ptr<ClassifySink> out, ClassifyResult result,
                               std::shared_ptr<const adapters::Adapter> adapter, metrics::AdapterMetrics* metrics)
    : out_(std::move(out)), result_(std::move(result)), adapter_(std::move(adapter)), metrics_(metrics) {}

void ClassifyOutput::OnScores(std::span<const float> scores) { scores_.assign(scores.begin(), scores.end()); }

void ClassifyOutput::OnFinish(const engine::Finish& finish) {
  absl::StatusOr<ClassifyResult> answer = absl::InternalError("the request ended without scores");
  if (!finish.status.ok()) answer = finish.status;
  if (finish.status.ok() && !scores_.empty()) {
    const adapters::AdapterSummary& summary = adapter_->summary();
    // Softmax in double: exp(x - max) / sum.
    const double top = *std::max_element(scores_.begin(), scores_.end());
    double sum = 0;
    for (float s : scores_) sum += std::exp(static_cast<double>(s) - top);
    for (size_t i = 0; i < scores_.size(); ++i) {
      const double x = scores_[i];
      const double p = summary.multi_label ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x - top) / sum;
      const std::string label = i < summary.labels.size() ? summary.labels[i] : absl::StrCat(i);
      result_.scores.push_back(LabelScore{label, scores_[i], static_cast<float>(p)});
    }
    answer = std::move(result_);
  }
  adapter_->RecordRequest(0);
  if (metrics_ != nullptr) metrics_->RecordAdapterRequest(adapter_->id(), 0);
  adapter_.reset();
  out_->OnResult(std::move(answer));
}

}  // namespace adapterd::core
