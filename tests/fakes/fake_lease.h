// A fake model::AdapterLease whose weights arrive when the test says so
// (Arrive()), or, with kOnFirstCheck, on another thread just after the
// first time anyone asks for them: a load that ends while the engine waits.
#ifndef ADAPTERD_TESTS_FAKES_FAKE_LEASE_H_
#define ADAPTERD_TESTS_FAKES_FAKE_LEASE_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/model/adapter_lease.h"

namespace adapterd::testing {

class FakeLease : public model::AdapterLease {
 public:
  enum class Arrival { kWhenTold, kOnFirstCheck };
  FakeLease(const model::AdapterWeights* w, Arrival arrival) : w_(w), arrival_(arrival) {}
  ~FakeLease() override {
    if (arriver_.joinable()) arriver_.join();
  }

  const std::string& adapter_id() const override { return id_; }
  int64_t num_virtual_tokens() const override { return 0; }
  absl::StatusOr<const model::AdapterWeights*> weights() const override {
    if (arrived_.load(std::memory_order_acquire)) return w_;
    if (arrival_ == Arrival::kOnFirstCheck && !checked_.exchange(true)) {
      arriver_ = std::thread([self = const_cast<FakeLease*>(this)] { self->Arrive(); });
    }
    return nullptr;
  }
  void NotifyWhenSettled(absl::AnyInvocable<void()> settled) override {
    {
      absl::MutexLock lock(&mu_);
      if (!arrived_.load(std::memory_order_acquire)) {
        settled_ = std::move(settled);
        return;
      }
    }
    settled();
  }
  // Settles the lease (once) and runs the callback, with no lock held.
  void Arrive() {
    absl::AnyInvocable<void()> cb;
    {
      absl::MutexLock lock(&mu_);
      if (arrived_.exchange(true, std::memory_order_acq_rel)) return;
      cb = std::move(settled_);
    }
    if (cb) cb();
  }

 private:
  const std::string id_ = "fake";
  const model::AdapterWeights* const w_;
  const Arrival arrival_;
  std::atomic<bool> arrived_{false};
  mutable std::atomic<bool> checked_{false};
  mutable std::thread arriver_;  // started once, from weights(); joined by the destructor
  absl::Mutex mu_;
  absl::AnyInvocable<void()> settled_ ABSL_GUARDED_BY(mu_);
};

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_FAKES_FAKE_LEASE_H_
