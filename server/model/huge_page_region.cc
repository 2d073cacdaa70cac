#include "server/model/huge_page_region.h"

#include <ATen/ATen.h>
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>

namespace adapterd::model {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kPage = size_t{4} << 10;

}  // namespace

at::Tensor HugePageBytes(int64_t nbytes) {
  TORCH_CHECK(nbytes >= 0, "HugePageBytes: negative size ", nbytes);
  const size_t len = (static_cast<size_t>(nbytes) + kPage - 1) / kPage * kPage;
  if (len == 0) return at::empty({0}, at::kByte);
  // Room to start the region on a 2 MiB boundary; the slack around it is
  // unmapped again, so the mapping is `len` bytes.
  const size_t reserve = len + kHugePage;
  void* p = mmap(nullptr, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK(p != MAP_FAILED, "HugePageBytes: mmap of ", reserve, " bytes failed");
  const auto raw = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = (raw + kHugePage - 1) & ~uintptr_t{kHugePage - 1};
  if (start > raw) munmap(p, start - raw);
  if (const uintptr_t end = raw + reserve, used = start + len; end > used) {
    munmap(reinterpret_cast<void*>(used), end - used);
  }
  void* region = reinterpret_cast<void*>(start);
  if (const size_t whole = len / kHugePage * kHugePage; whole > 0) madvise(region, whole, MADV_HUGEPAGE);
  return at::from_blob(
      region, {static_cast<int64_t>(len)}, [len](void* q) { munmap(q, len); }, at::TensorOptions(at::kByte))
      .narrow(0, 0, nbytes);
}

}  // namespace adapterd::model
