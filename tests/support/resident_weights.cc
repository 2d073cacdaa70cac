#include "tests/support/resident_weights.h"

#include <memory>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/support/wait.h"

namespace adapterd::testing {

const model::AdapterWeights& ResidentWeights(const adapters::Adapter& a) {
  std::shared_ptr<model::AdapterLease> lease = a.Lease();
  auto settled = std::make_shared<absl::Notification>();
  lease->NotifyWhenSettled([settled] { settled->Notify(); });
  absl::StatusOr<const model::AdapterWeights*> w = nullptr;
  if (Await(*settled, "adapter " + a.id() + " to become resident")) w = lease->weights();
  if (!w.ok() || *w == nullptr) {
    ADD_FAILURE() << "adapter " << a.id() << " did not become resident: " << w.status();
    static const model::AdapterWeights* const empty = new model::AdapterWeights(0);
    return *empty;
  }
  return **w;
}

}  // namespace adapterd::testing
