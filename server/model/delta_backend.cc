#include "server/model/delta_backend.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/gpu/cuda_lora_launcher.h"
#include "server/gpu/host_lora_launcher.h"
#include "server/model/aten_delta_backend.h"
#include "server/model/sgmv_delta_backend.h"

namespace adapterd::model {

absl::StatusOr<std::unique_ptr<DeltaBackend>> MakeDeltaBackend(c10::Device device, DeltaBackendKind kind) {
  const bool cuda = device.is_cuda();
  if (kind == DeltaBackendKind::kAten || (kind == DeltaBackendKind::kAuto && !(cuda && gpu::CudaKernelsBuilt()))) {
    return std::make_unique<AtenDeltaBackend>();
  }
  if (device.is_cpu()) return std::make_unique<SgmvDeltaBackend>(std::make_unique<gpu::HostLoraLauncher>());
  if (!cuda) {
    return absl::FailedPreconditionError(
        absl::StrCat("the segmented adapter kernels run on cpu and cuda devices, not on ", device.str()));
  }
  absl::StatusOr<std::unique_ptr<gpu::LoraLauncher>> launcher = gpu::MakeCudaLoraLauncher();
  if (!launcher.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("adapter kernels on ", device.str(), ": ",
                                                      launcher.status().message()));
  }
  return std::make_unique<SgmvDeltaBackend>(*std::move(launcher));
}

}  // namespace adapterd::model
