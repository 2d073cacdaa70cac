// Makes Debian's (uninstrumented) Abseil mutexes visible to ThreadSanitizer.
//
// TSan learns happens-before edges only from instrumented code and the libc
// calls it intercepts; absl::Mutex is built from atomics and futexes inside
// libabsl_synchronization.so, so without help every access guarded by one
// would be reported as a race. Preloaded (LD_PRELOAD) into the TSan suite by
// tests/sanitizers/run.sh, this library interposes the Mutex and CondVar
// entry points that take and release the lock, and Notification's Notify and
// waits (callers inside Abseil and gRPC reach them through the PLT too), runs
// the real ones, and tells TSan that a release happened before the next
// acquisition of the same mutex, and a Notify before a wait that saw it.
// It also orders the reference count of a Status shared between threads, so
// that the owner that frees it is seen to come after the others' reads.
// It is built without instrumentation and calls TSan only when the process
// has it, so the shells and Python processes that tests start are unaffected.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <atomic>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

extern "C" {
void __tsan_acquire(void* addr) __attribute__((weak));
void __tsan_release(void* addr) __attribute__((weak));
}

namespace {

#define ADAPTERD_STR2(x) #x
#define ADAPTERD_STR(x) ADAPTERD_STR2(x)

// The real definition of the Abseil symbol whose mangled name, after
// "_ZN4absl<inline namespace>" ("_ZNK4absl..." for a const member), is `suffix`.
void* Real(const char* suffix, bool const_member = false) {
  const std::string ns = ADAPTERD_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name =
      std::string(const_member ? "_ZNK4absl" : "_ZN4absl") + std::to_string(ns.size()) + ns + suffix;
  void* f = dlsym(RTLD_NEXT, name.c_str());
  if (f == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found\n", name.c_str());
    std::abort();
  }
  return f;
}

template <typename F>
F RealFn(const char* suffix, bool const_member = false) {
  return reinterpret_cast<F>(Real(suffix, const_member));
}

inline void Acquire(const void* mu) {
  if (__tsan_acquire != nullptr) __tsan_acquire(const_cast<void*>(mu));
}
inline void Release(const void* mu) {
  if (__tsan_release != nullptr) __tsan_release(const_cast<void*>(mu));
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

using synchronization_internal::KernelTimeout;

void Mutex::Lock() {
  static auto real = RealFn<void (*)(Mutex*)>("5Mutex4LockEv");
  real(this);
  Acquire(this);
}

void Mutex::ReaderLock() {
  static auto real = RealFn<void (*)(Mutex*)>("5Mutex10ReaderLockEv");
  real(this);
  Acquire(this);
}

bool Mutex::TryLock() {
  static auto real = RealFn<bool (*)(Mutex*)>("5Mutex7TryLockEv");
  const bool got = real(this);
  if (got) Acquire(this);
  return got;
}

bool Mutex::ReaderTryLock() {
  static auto real = RealFn<bool (*)(Mutex*)>("5Mutex13ReaderTryLockEv");
  const bool got = real(this);
  if (got) Acquire(this);
  return got;
}

void Mutex::Unlock() {
  static auto real = RealFn<void (*)(Mutex*)>("5Mutex6UnlockEv");
  Release(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  static auto real = RealFn<void (*)(Mutex*)>("5Mutex12ReaderUnlockEv");
  Release(this);
  real(this);
}

bool Mutex::AwaitCommon(const Condition& cond, KernelTimeout t) {
  static auto real = RealFn<bool (*)(Mutex*, const Condition&, KernelTimeout)>(
      "5Mutex11AwaitCommonERKNS0_9ConditionENS0_24synchronization_internal13KernelTimeoutE");
  Release(this);
  const bool r = real(this, cond, t);
  Acquire(this);
  return r;
}

bool Mutex::LockWhenCommon(const Condition& cond, KernelTimeout t, bool write) {
  static auto real = RealFn<bool (*)(Mutex*, const Condition&, KernelTimeout, bool)>(
      "5Mutex14LockWhenCommonERKNS0_9ConditionENS0_24synchronization_internal13KernelTimeoutEb");
  const bool r = real(this, cond, t, write);
  Acquire(this);
  return r;
}

bool CondVar::WaitCommon(Mutex* mutex, KernelTimeout t) {
  static auto real = RealFn<bool (*)(CondVar*, Mutex*, KernelTimeout)>(
      "7CondVar10WaitCommonEPNS0_5MutexENS0_24synchronization_internal13KernelTimeoutE");
  Release(mutex);
  const bool r = real(this, mutex, t);
  Acquire(mutex);
  return r;
}

// A Notification orders Notify() before every wait that returns true; a
// wait that finds it already notified takes no lock, so the edge is told
// to TSan here.
void Notification::Notify() {
  static auto real = RealFn<void (*)(Notification*)>("12Notification6NotifyEv");
  Release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  static auto real =
      RealFn<void (*)(const Notification*)>("12Notification19WaitForNotificationEv", true);
  real(this);
  Acquire(this);
}

bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  static auto real = RealFn<bool (*)(const Notification*, absl::Duration)>(
      "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE", true);
  const bool r = real(this, timeout);
  if (r) Acquire(this);
  return r;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  static auto real = RealFn<bool (*)(const Notification*, absl::Time)>(
      "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE", true);
  const bool r = real(this, deadline);
  if (r) Acquire(this);
  return r;
}

namespace status_internal {

// Abseil's own steps (libabsl_status does exactly this), with the edges told
// to TSan: every owner releases before it drops its reference, and the one
// that drops the last acquires before it frees the representation.
void StatusRep::Unref() const {
  Release(this);
  if (ref_.load(std::memory_order_acquire) == 1 || ref_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    Acquire(this);
    delete this;
  }
}

}  // namespace status_internal

ABSL_NAMESPACE_END
}  // namespace absl
