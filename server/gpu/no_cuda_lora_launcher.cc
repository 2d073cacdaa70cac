// cuda_lora_launcher.h in a build without the CUDA kernels (the CPU build).
#include "server/gpu/cuda_lora_launcher.h"

namespace adapterd::gpu {

bool CudaKernelsBuilt() { return false; }

absl::StatusOr<std::unique_ptr<LoraLauncher>> MakeCudaLoraLauncher() {
  return absl::FailedPreconditionError(
      "this build has no CUDA adapter kernels: build with bench/gpu/bundle.sh (./x gpu-bundle) or "
      "-DADAPTERD_CUDA=ON");
}

}  // namespace adapterd::gpu
