// Weights of a registered adapter, for tests that run them directly.
#ifndef ADAPTERD_TESTS_SUPPORT_RESIDENT_WEIGHTS_H_
#define ADAPTERD_TESTS_SUPPORT_RESIDENT_WEIGHTS_H_

#include "adapters/adapter_registry.h"
#include "server/model/adapter_weights.h"

namespace adapterd::testing {

// Brings `a` to the device tier through a lease and returns its weights.
// With the registry's default (unlimited) budgets they stay resident after
// the lease ends, for as long as `a` is alive. A failure fails the test and
// gives an empty adapter.
const model::AdapterWeights& ResidentWeights(const adapters::Adapter& a);

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_SUPPORT_RESIDENT_WEIGHTS_H_
