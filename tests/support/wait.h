// Bounded waits for tests: every wait has a deadline, and a wait that times
// out fails the test saying what it waited for.
#ifndef ADAPTERD_TESTS_SUPPORT_WAIT_H_
#define ADAPTERD_TESTS_SUPPORT_WAIT_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace adapterd::testing {

inline constexpr absl::Duration kWaitTimeout = absl::Seconds(120);

// Waits for `n`; on timeout adds a test failure naming `what` and returns
// false (use as ASSERT_TRUE(Await(...))).
bool Await(absl::Notification& n, const std::string& what, absl::Duration timeout = kWaitTimeout);

// For state that nothing signals (another process's metrics, a component's
// counters): checks `done` every millisecond until it holds; on timeout adds
// a failure naming `what` and returns false. Only ever used to wait for
// something that must happen, never to show that something did not.
bool PollUntil(const std::function<bool()>& done, const std::string& what, absl::Duration timeout = kWaitTimeout);

// A count that one thread raises and another waits on. Thread-safe.
class Progress {
 public:
  void Add(int64_t n = 1) ABSL_LOCKS_EXCLUDED(mu_);
  int64_t value() const ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until the count is at least `n`; on timeout adds a failure naming
  // `what` and the count reached, and returns false.
  bool AwaitAtLeast(int64_t n, const std::string& what, absl::Duration timeout = kWaitTimeout)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  int64_t value_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_SUPPORT_WAIT_H_
