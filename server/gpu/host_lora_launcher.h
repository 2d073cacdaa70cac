// The kernels of lora_kernels.h, run on the CPU over host memory.
#ifndef ADAPTERD_SERVER_GPU_HOST_LORA_LAUNCHER_H_
#define ADAPTERD_SERVER_GPU_HOST_LORA_LAUNCHER_H_

#include "server/gpu/lora_launcher.h"

namespace adapterd::gpu {

// A HostLoraLauncher computes what the CUDA kernels compute, row by row on
// the calling thread, with the products accumulated in float64 and tmp and
// the additions to y rounded as the kernels round them (float tmp; y in its
// dtype). It is the kernels' contract made executable on a machine without
// a GPU: tests run the CUDA delta backend's tables through it, and
// `--delta_backend=sgmv` serves with it on the CPU (slowly). Stateless.
class HostLoraLauncher : public LoraLauncher {
 public:
  bool host_memory() const override { return true; }
  absl::Status Shrink(const ShrinkArgs& a, const LaunchRows& rows) const override;
  absl::Status Expand(const ExpandArgs& a, const LaunchRows& rows) const override;
};

}  // namespace adapterd::gpu

#endif  // ADAPTERD_SERVER_GPU_HOST_LORA_LAUNCHER_H_
