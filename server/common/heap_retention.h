#ifndef ADAPTERD_SERVER_COMMON_HEAP_RETENTION_H_
#define ADAPTERD_SERVER_COMMON_HEAP_RETENTION_H_

#include <cstddef>

namespace adapterd {

// While a HeapRetention lives, the C library's malloc keeps the memory the
// process frees, up to `keep_bytes` at the top of each of its heaps, for its
// next allocations, instead of handing it back to the kernel and faulting
// it in again, page by page, when the next decode step or training step
// allocates the same buffers. Allocations up to 32 MiB come from the heaps.
//
// The settings are process-wide. Instances may nest and overlap on any
// threads: the first one sets the thresholds (later ones leave them as the
// first set them), and when the last one is destroyed glibc's trim
// threshold is restored and what is free is returned to the kernel. With a
// C library other than glibc, or under a sanitizer's allocator, it changes
// nothing. Thread-safe.
class HeapRetention {
 public:
  explicit HeapRetention(size_t keep_bytes = size_t{1} << 30);
  ~HeapRetention();
  HeapRetention(const HeapRetention&) = delete;
  HeapRetention& operator=(const HeapRetention&) = delete;

  // Whether any HeapRetention lives now.
  static bool Active();
};

}  // namespace adapterd

#endif  // ADAPTERD_SERVER_COMMON_HEAP_RETENTION_H_
