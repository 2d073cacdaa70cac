// Composition: one request runs several LoRA adapters at once, each with a
// weight, as the sum of their weighted deltas.
#ifndef ADAPTERD_SERVER_MODEL_COMPOSED_LEASE_H_
#define ADAPTERD_SERVER_MODEL_COMPOSED_LEASE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/model/adapter_lease.h"
#include "server/model/adapter_weights.h"

namespace adapterd::model {

// One component of a composition: a plain LoRA adapter and its weight.
struct WeightedWeights {
  std::string id;  // for error messages
  const AdapterWeights* weights = nullptr;
  double weight = 1.0;
};

// Why `w` cannot take part in a composition (INVALID_ARGUMENT naming `id`),
// or OK for a plain LoRA: low-rank deltas on the projections and nothing
// else. DoRA is refused since its magnitude rescaling is not linear in the
// delta; so are IA3, bottleneck and prompt-tuning adapters, whole modules
// (modules_to_save), trainable tokens, LoRA on the embedding, trained
// biases, classification heads and other composites.
absl::Status CheckComposable(const std::string& id, const AdapterWeights& w);

// The composite of `parts`: for every layer and projection, each part's
// LoRA module in order, sharing that part's tensors (views, no copy) with
// its scale multiplied by its weight. It applies
// sum_i weight_i * scale_i * B_i A_i x, which is what PEFT's
// add_weighted_adapter(..., combination_type="cat") builds by concatenating
// weight_i * scale_i * A_i and B_i. The composite keeps the tensors alive by
// itself; the parts' AdapterWeights need not outlive it. Errors: those of
// CheckComposable, and INVALID_ARGUMENT for no parts or a non-finite weight.
absl::StatusOr<std::shared_ptr<const AdapterWeights>> ComposeLora(std::span<const WeightedWeights> parts);

// A component lease and its weight, as ComposedLease takes them.
struct WeightedLease {
  std::shared_ptr<AdapterLease> lease;
  double weight = 1.0;
};

// A lease on a composition of adapters: it holds one lease per component,
// so every component stays resident while it lives, and settles once all
// of them have: ready with the composite (ComposeLora, built once, on the
// thread that settles the last component), or failed with the first
// failed component's error in component order (or ComposeLora's). To the
// engine it is one lease with one weights pointer.
//
// adapter_id() is the first component's id: a composed request counts
// under its first adapter wherever requests are counted per adapter.
//
// Owns its component leases; create it with Create (the components'
// callbacks hold it weakly, so dropping the last reference releases the
// components even before they settle). Thread-safe; weights() takes no
// lock.
class ComposedLease final : public AdapterLease, public std::enable_shared_from_this<ComposedLease> {
 public:
  // `components` must be non-empty, with non-null leases.
  static std::shared_ptr<ComposedLease> Create(std::vector<WeightedLease> components);

  const std::string& adapter_id() const override { return components_.front().lease->adapter_id(); }
  int64_t num_virtual_tokens() const override { return 0; }
  absl::StatusOr<const AdapterWeights*> weights() const override;
  void NotifyWhenSettled(absl::AnyInvocable<void()> settled) override;

  explicit ComposedLease(std::vector<WeightedLease> components);  // use Create

 private:
  // Called once per component as it settles; the last one settles this.
  void ComponentSettled();
  // The composite, or why there is none; every component has settled.
  absl::StatusOr<std::shared_ptr<const AdapterWeights>> Build() const;

  const std::vector<WeightedLease> components_;
  absl::Mutex mu_;
  size_t pending_ ABSL_GUARDED_BY(mu_);  // components not settled yet
  bool settled_ ABSL_GUARDED_BY(mu_) = false;
  bool notify_registered_ ABSL_GUARDED_BY(mu_) = false;
  absl::AnyInvocable<void()> on_settled_ ABSL_GUARDED_BY(mu_);
  // Written once, by the thread that settles the lease, before ready_.
  std::shared_ptr<const AdapterWeights> composite_;
  absl::Status error_;
  std::atomic<bool> ready_{false};
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_COMPOSED_LEASE_H_
