#include "tests/support/resident_weights.h"

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace adapterd::testing {

const model::AdapterWeights& ResidentWeights(const adapters::Adapter& a) {
  std::shared_ptr<engine::AdapterLease> lease = a.Lease();
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (true) {
    absl::StatusOr<const model::AdapterWeights*> w = lease->weights();
    if (!w.ok() || absl::Now() > deadline) {
      ADD_FAILURE() << "adapter " << a.id() << " did not become resident: " << w.status();
      static const model::AdapterWeights* const empty = new model::AdapterWeights(0);
      return *empty;
    }
    if (*w != nullptr) return **w;
    absl::SleepFor(absl::Milliseconds(1));
  }
}

}  // namespace adapterd::testing
