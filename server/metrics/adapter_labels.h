// The bounded set of adapter ids that metrics may use as label values.
#ifndef ADAPTERD_SERVER_METRICS_ADAPTER_LABELS_H_
#define ADAPTERD_SERVER_METRICS_ADAPTER_LABELS_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"

namespace adapterd::metrics {

// Maps adapter ids to `adapter` label values: the first `max_labels` ids
// seen keep their own value, later ones share "other", and the base model
// ("") is "base". Every layer's per-adapter series go through one
// AdapterLabels, so the series count stays bounded across all of them.
// Thread-safe; a leaf lock (nothing is called while it is held).
class AdapterLabels {
 public:
  explicit AdapterLabels(int max_labels = 100) : max_labels_(max_labels) {}
  AdapterLabels(const AdapterLabels&) = delete;
  AdapterLabels& operator=(const AdapterLabels&) = delete;

  std::string Label(const std::string& adapter_id) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const int max_labels_;
  absl::Mutex mu_;
  absl::flat_hash_set<std::string> labelled_ ABSL_GUARDED_BY(mu_);
};

}  // namespace adapterd::metrics

#endif  // ADAPTERD_SERVER_METRICS_ADAPTER_LABELS_H_
