// The kernels of lora_kernels.h on a CUDA device.
#ifndef ADAPTERD_SERVER_GPU_CUDA_LORA_LAUNCHER_H_
#define ADAPTERD_SERVER_GPU_CUDA_LORA_LAUNCHER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "server/gpu/lora_launcher.h"

namespace adapterd::gpu {

// Whether this build links the CUDA kernels (bench/gpu/bundle.sh, or
// -DADAPTERD_CUDA=ON with a toolkit); the CPU build does not.
bool CudaKernelsBuilt();

// A launcher that enqueues the kernels on the legacy default stream of the
// current device, the stream LibTorch's operations use unless a caller
// makes another current (adapterd never does), so that a launch is ordered
// after the products that wrote its inputs and before those that read its
// output. Each call checks the launch error; none synchronises.
// FailedPrecondition, naming the build option, when the kernels are not
// built in.
absl::StatusOr<std::unique_ptr<LoraLauncher>> MakeCudaLoraLauncher();

}  // namespace adapterd::gpu

#endif  // ADAPTERD_SERVER_GPU_CUDA_LORA_LAUNCHER_H_
