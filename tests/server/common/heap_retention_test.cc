// HeapRetention: nesting, and that memory freed while it lives is used again
// without fresh page faults.
#include "server/common/heap_retention.h"

#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <optional>

#include "gtest/gtest.h"

namespace adapterd {
namespace {

long MinorFaults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

TEST(HeapRetentionTest, NestedRetentionsEndWithTheLast) {
  EXPECT_FALSE(HeapRetention::Active());
  std::optional<HeapRetention> outer(std::in_place);
  {
    HeapRetention inner(64 << 20);
    EXPECT_TRUE(HeapRetention::Active());
  }
  EXPECT_TRUE(HeapRetention::Active());
  outer.reset();
  EXPECT_FALSE(HeapRetention::Active());
}

// A step's worth of buffers (16 MiB in 1 MiB pieces) freed and allocated
// again: the second time, nearly no page is faulted in. This is glibc's
// behaviour under the thresholds the retention sets; a sanitizer's
// allocator ignores them, so the check is for the plain build only.
TEST(HeapRetentionTest, FreedBuffersComeBackWithoutFaults) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer's allocator ignores malloc's thresholds";
#else
  HeapRetention keep;
  constexpr int kPieces = 16;
  constexpr size_t kPiece = size_t{1} << 20;
  auto round = [&] {
    void* p[kPieces];
    for (void*& q : p) {
      q = std::malloc(kPiece);
      ASSERT_NE(q, nullptr);
      std::memset(q, 1, kPiece);
    }
    for (void* q : p) std::free(q);
  };
  round();
  const long before = MinorFaults();
  round();
  const long faults = MinorFaults() - before;
  // 4,096 pages were touched; given back to the kernel, each would fault again.
  EXPECT_LT(faults, 256) << "minor faults in the second round";
#endif
}

}  // namespace
}  // namespace adapterd
