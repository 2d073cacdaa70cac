#include "server/common/heap_retention.h"

#include <malloc.h>

#include <algorithm>
#include <climits>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace adapterd {
namespace {

// glibc's default trim threshold, restored when the last retention ends.
constexpr int kDefaultTrimBytes = 128 << 10;
constexpr int kMmapThresholdBytes = 32 << 20;

// A leaf lock: nothing else is taken while it is held.
absl::Mutex& Mu() {
  static absl::Mutex* const mu = new absl::Mutex();
  return *mu;
}
int live ABSL_GUARDED_BY(Mu()) = 0;

}  // namespace

HeapRetention::HeapRetention(size_t keep_bytes) {
  absl::MutexLock lock(&Mu());
  if (live++ > 0) return;
#ifdef M_TRIM_THRESHOLD
  mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes);
  mallopt(M_TRIM_THRESHOLD, static_cast<int>(std::min<size_t>(keep_bytes, INT_MAX)));
#endif
}

HeapRetention::~HeapRetention() {
  absl::MutexLock lock(&Mu());
  if (--live > 0) return;
#ifdef M_TRIM_THRESHOLD
  mallopt(M_TRIM_THRESHOLD, kDefaultTrimBytes);
  malloc_trim(0);
#endif
}

bool HeapRetention::Active() {
  absl::MutexLock lock(&Mu());
  return live > 0;
}

}  // namespace adapterd
