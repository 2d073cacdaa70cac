// HugePageBytes: size, zeroed contents, the 2 MiB alignment, the huge-page
// advice on the whole 2 MiB pages only, and the mapping's release.
#include "server/model/huge_page_region.h"

#include <ATen/ATen.h>
#include <sys/mman.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

constexpr int64_t kHuge = int64_t{2} << 20;

// The VmFlags line of the mapping of /proc/self/smaps that holds `addr`,
// or "" when no mapping does.
std::string VmFlagsAt(const void* addr) {
  std::ifstream smaps("/proc/self/smaps");
  const auto want = reinterpret_cast<uintptr_t>(addr);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= want && want < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

// Whether this kernel takes MADV_HUGEPAGE at all (one built without
// transparent huge pages refuses it): asked on a mapping of the test's own.
bool KernelTakesHugePageAdvice() {
  void* p = mmap(nullptr, 2 * kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  const bool taken = madvise(p, 2 * kHuge, MADV_HUGEPAGE) == 0;
  munmap(p, 2 * kHuge);
  return taken;
}

TEST(HugePageBytesTest, GivesZeroedBytesOnA2MiBBoundary) {
  const int64_t n = 3 * kHuge + 12345;
  const at::Tensor t = HugePageBytes(n);
  EXPECT_EQ(t.scalar_type(), at::kByte);
  EXPECT_EQ(t.numel(), n);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % kHuge, 0u);
  EXPECT_EQ(t.count_nonzero().item<int64_t>(), 0);
  t.fill_(7);  // writable to the last byte
  EXPECT_EQ(t.sum().item<int64_t>(), 7 * n);
}

TEST(HugePageBytesTest, AdvisesHugePagesOnTheWholePagesOnly) {
  const at::Tensor t = HugePageBytes(2 * kHuge + 4096 * 3);
  const auto* base = static_cast<const char*>(t.data_ptr());
  const std::string whole = VmFlagsAt(base), tail = VmFlagsAt(base + 2 * kHuge);
  ASSERT_FALSE(whole.empty());
  ASSERT_FALSE(tail.empty());
  // Where the kernel takes the advice it shows as "hg".
  EXPECT_EQ(whole.find(" hg") != std::string::npos, KernelTakesHugePageAdvice()) << whole;
  EXPECT_EQ(tail.find(" hg"), std::string::npos) << tail;
}

TEST(HugePageBytesTest, ReleasesTheMappingWithTheLastView) {
  const void* addr = nullptr;
  at::Tensor view;
  {
    const at::Tensor t = HugePageBytes(kHuge);
    addr = t.data_ptr();
    view = t.narrow(0, 100, 10);
  }
  EXPECT_FALSE(VmFlagsAt(addr).empty());  // a view keeps it
  view = at::Tensor();
  EXPECT_TRUE(VmFlagsAt(addr).empty());
}

TEST(HugePageBytesTest, SmallAndEmptyRegions) {
  EXPECT_EQ(HugePageBytes(0).numel(), 0);
  const at::Tensor one = HugePageBytes(1);
  EXPECT_EQ(one.numel(), 1);
  EXPECT_EQ(VmFlagsAt(one.data_ptr()).find(" hg"), std::string::npos);  // under 2 MiB: 4 KiB pages
  EXPECT_THROW(HugePageBytes(-1), c10::Error);
}

}  // namespace
}  // namespace adapterd::model
