#include "server/metrics/adapter_labels.h"

namespace adapterd::metrics {

std::string AdapterLabels::Label(const std::string& adapter_id) {
  if (adapter_id.empty()) return "base";
  absl::MutexLock lock(&mu_);
  if (labelled_.contains(adapter_id)) return adapter_id;
  if (static_cast<int>(labelled_.size()) < max_labels_) {
    labelled_.insert(adapter_id);
    return adapter_id;
  }
  return "other";
}

}  // namespace adapterd::metrics
