// The seam between the adapter math of a model step and the kernels of
// lora_kernels.h: who runs them, and on what memory.
#ifndef ADAPTERD_SERVER_GPU_LORA_LAUNCHER_H_
#define ADAPTERD_SERVER_GPU_LORA_LAUNCHER_H_

#include "absl/status/status.h"
#include "server/gpu/lora_kernels.h"

namespace adapterd::gpu {

// The rows one launch covers: every row of `row_slot` (BGMV, one slot per
// row, -1 for none), or every row of `segments` (SGMV). All pointers are in
// the launcher's memory (the device's, or the host's for HostLoraLauncher).
struct LaunchRows {
  bool sgmv = false;
  const int* row_slot = nullptr;
  int rows = 0;
  const Segment* segments = nullptr;
  int num_segments = 0;
  int max_rows = 0;  // rows of the largest segment
  // Where a device launcher enqueues: the stream LibTorch's operations use
  // (CurrentStream() of step_graph.h), so that launches are ordered with
  // them and captured with them in a graph. Ignored by the host launcher.
  Stream stream = nullptr;
};

// A LoraLauncher runs the shrink and expand kernels of lora_kernels.h with
// the arguments' semantics there, on memory it can address. Launches are
// ordered: an Expand sees the tmp columns of every earlier Shrink. A
// launcher holds no state between calls; its methods are const and may be
// called from any one thread at a time per stream it uses.
class LoraLauncher {
 public:
  virtual ~LoraLauncher() = default;
  // Whether the tables and tensors of a launch live in host memory (true)
  // or in the device's (false).
  virtual bool host_memory() const = 0;
  virtual absl::Status Shrink(const ShrinkArgs& a, const LaunchRows& rows) const = 0;
  virtual absl::Status Expand(const ExpandArgs& a, const LaunchRows& rows) const = 0;
};

}  // namespace adapterd::gpu

#endif  // ADAPTERD_SERVER_GPU_LORA_LAUNCHER_H_
