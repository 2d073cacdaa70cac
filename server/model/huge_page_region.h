// Memory for weights that every decode step streams from DRAM in short
// runs: an adapter's A and B.
#ifndef ADAPTERD_SERVER_MODEL_HUGE_PAGE_REGION_H_
#define ADAPTERD_SERVER_MODEL_HUGE_PAGE_REGION_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace adapterd::model {

// A uint8 CPU tensor of `nbytes` zeroed bytes in an anonymous mapping of
// its own, aligned to 2 MiB, whose whole 2 MiB pages are marked for
// transparent huge pages (madvise MADV_HUGEPAGE; the bytes past the last
// whole 2 MiB page stay in 4 KiB pages, so no memory is held beyond
// `nbytes` rounded up to 4 KiB). The mapping is released when the last
// tensor viewing it is gone. A step reads each adapter's weights as many
// runs of a few KiB: on 4 KiB pages each run pays its own page walks and
// the hardware prefetcher stops at every page boundary. Where the kernel
// has no transparent huge pages the advice is ignored and the region is
// plain memory. Throws c10::Error when the mapping fails. Thread-safe.
at::Tensor HugePageBytes(int64_t nbytes);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_HUGE_PAGE_REGION_H_
