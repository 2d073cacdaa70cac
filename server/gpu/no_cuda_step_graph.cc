// The step graphs of a build without a CUDA LibTorch: none.
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/gpu/step_graph.h"

namespace adapterd::gpu {

bool StepGraphsBuilt() { return false; }

absl::StatusOr<std::unique_ptr<StepGraph>> CaptureStepGraph(c10::Device device, const std::function<void()>&,
                                                            const StepGraph*) {
  return absl::UnimplementedError(
      absl::StrCat("CUDA graphs on ", device.str(), ": this build has none (build against a CUDA LibTorch, "
                   "bench/gpu/bundle.sh)"));
}

Stream CurrentStream(c10::Device) { return nullptr; }

}  // namespace adapterd::gpu
