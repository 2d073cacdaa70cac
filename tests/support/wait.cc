#include "tests/support/wait.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace adapterd::testing {

bool Await(absl::Notification& n, const std::string& what, absl::Duration timeout) {
  if (n.WaitForNotificationWithTimeout(timeout)) return true;
  ADD_FAILURE() << "timed out after " << absl::FormatDuration(timeout) << " waiting for " << what;
  return false;
}

bool PollUntil(const std::function<bool()>& done, const std::string& what, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() >= deadline) {
      ADD_FAILURE() << "timed out after " << absl::FormatDuration(timeout) << " waiting for " << what;
      return false;
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

void Progress::Add(int64_t n) {
  absl::MutexLock lock(&mu_);
  value_ += n;
}

int64_t Progress::value() const {
  absl::MutexLock lock(&mu_);
  return value_;
}

bool Progress::AwaitAtLeast(int64_t n, const std::string& what, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return value_ >= n; };
  if (mu_.AwaitWithTimeout(absl::Condition(&reached), timeout)) return true;
  ADD_FAILURE() << "timed out after " << absl::FormatDuration(timeout) << " waiting for " << what << " (reached "
                << value_ << " of " << n << ")";
  return false;
}

}  // namespace adapterd::testing
