// A request's claim on one adapter's weights, and the simplest kind of claim.
#ifndef ADAPTERD_SERVER_MODEL_ADAPTER_LEASE_H_
#define ADAPTERD_SERVER_MODEL_ADAPTER_LEASE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "server/model/adapter_weights.h"

namespace adapterd::model {

// One request's claim on an adapter whose weights may not be resident yet.
// It is the only handle a request holds on its adapter: while the lease
// lives, the adapter's weights, once resident, stay resident and valid.
//
// A lease starts unsettled when its weights are still being brought in, and
// settles exactly once: ready (weights() gives the weights) or failed
// (weights() gives the error that ended the attempt). A lease whose weights
// are already resident is settled from the start. weights() never waits and
// never takes a lock once the lease has settled. Implementations are
// thread-safe.
class AdapterLease {
 public:
  virtual ~AdapterLease() = default;

  // The adapter's id, for metrics and logs.
  virtual const std::string& adapter_id() const = 0;
  // Known without the weights: a prompt-tuning adapter's virtual tokens.
  virtual int64_t num_virtual_tokens() const = 0;
  // The weights (the same pointer from the first non-null answer on, valid
  // for the lease's life), null while unsettled, or the error.
  virtual absl::StatusOr<const AdapterWeights*> weights() const = 0;
  // Calls `settled` once, when the lease settles: at once, on the calling
  // thread, when it already has; otherwise later, on another thread, with
  // no lock of the lease's or its owner's held. Only the first call to
  // NotifyWhenSettled registers a callback; `settled` must not block and
  // must stay valid (it may outlive the lease's other users).
  virtual void NotifyWhenSettled(absl::AnyInvocable<void()> settled) = 0;
};

// A lease on weights that are already resident, kept alive by the lease
// itself. For adapters the server does not tier (tests, benchmarks and
// conformance runs that build weights directly). Immutable; thread-safe.
class ResidentLease final : public AdapterLease {
 public:
  ResidentLease(std::string adapter_id, std::shared_ptr<const AdapterWeights> weights)
      : id_(std::move(adapter_id)), weights_(std::move(weights)) {}

  const std::string& adapter_id() const override { return id_; }
  int64_t num_virtual_tokens() const override { return weights_->num_virtual_tokens(); }
  absl::StatusOr<const AdapterWeights*> weights() const override { return weights_.get(); }
  void NotifyWhenSettled(absl::AnyInvocable<void()> settled) override { settled(); }

 private:
  const std::string id_;
  const std::shared_ptr<const AdapterWeights> weights_;
};

// A ResidentLease on `weights`, or null when `weights` is null (the base).
std::shared_ptr<AdapterLease> LeaseResident(std::string adapter_id,
                                            std::shared_ptr<const AdapterWeights> weights);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_ADAPTER_LEASE_H_
