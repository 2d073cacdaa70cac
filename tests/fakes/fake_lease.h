// A fake engine::AdapterLease whose weights arrive on the `ready_on`-th call
// of weights(), or once Arrive() is called (ready_on = 0). weights() is
// called on the engine thread only; Arrive() is safe from any thread.
#ifndef ADAPTERD_TESTS_FAKES_FAKE_LEASE_H_
#define ADAPTERD_TESTS_FAKES_FAKE_LEASE_H_

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "server/engine/request.h"

namespace adapterd::testing {

class FakeLease : public engine::AdapterLease {
 public:
  FakeLease(const model::AdapterWeights* w, int ready_on) : w_(w), ready_on_(ready_on) {}
  int64_t num_virtual_tokens() const override { return 0; }
  absl::StatusOr<const model::AdapterWeights*> weights() override {
    const int call = ++calls_;
    if (arrived_.load() || (ready_on_ > 0 && call >= ready_on_)) return w_;
    return nullptr;
  }
  void Arrive() { arrived_.store(true); }

 private:
  const model::AdapterWeights* const w_;
  const int ready_on_;
  int calls_ = 0;
  std::atomic<bool> arrived_{false};
};

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_FAKES_FAKE_LEASE_H_
