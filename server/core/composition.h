// Composed requests: the checks and leases of several weighted LoRA
// adapters that one request runs at once.
#ifndef ADAPTERD_SERVER_CORE_COMPOSITION_H_
#define ADAPTERD_SERVER_CORE_COMPOSITION_H_

#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/functional/function_ref.h"
#include "adapters/adapter_registry.h"
#include "server/core/generate_request.h"
#include "server/model/adapter_lease.h"

namespace adapterd::core {

// A composed request's hold on its adapters.
struct LeasedComposition {
  // A model::ComposedLease over one lease per component, in order.
  std::shared_ptr<model::AdapterLease> lease;
  // The first component: a composed request is counted under it in the
  // per-adapter accounting (as the lease's adapter_id() is).
  std::shared_ptr<const adapters::Adapter> first;
};

// Why `summary` (the adapter `id`'s) cannot be composed, or "" for a plain
// LoRA: its type is "lora", for causal LM, with no modules_to_save,
// trainable tokens, trained biases or LoRA on embed_tokens.
std::string NotComposableReason(const adapters::AdapterSummary& summary);

// Checks `adapters` and leases each one, which brings it to the device tier
// if it is not there. Every error is INVALID_ARGUMENT naming the field
// ("adapters", or "adapters[i]" and the id): more than `max_adapters`, an
// empty id, a weight that is not finite in float32, an id that is not loaded, and an
// adapter that is not plain LoRA (NotComposableReason, known from the
// registry before its weights are resident). An adapter whose first load
// is still running is UNAVAILABLE, as for a single adapter. The same id may
// come more than once: its deltas add up, as in PEFT. `adapters` must not
// be empty. `lookup` finds a ready adapter (the registry's Lookup, or
// LookupOrLoad with a shared store). Thread-safe if `lookup` is.
absl::StatusOr<LeasedComposition> LeaseComposition(
    absl::FunctionRef<absl::StatusOr<std::shared_ptr<const adapters::Adapter>>(const std::string&)> lookup,
    std::span<const WeightedAdapter> adapters, int max_adapters);

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_COMPOSITION_H_
