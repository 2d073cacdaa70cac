// Step graphs with LibTorch's CUDAGraph. Compiled only against a CUDA
// LibTorch (the GPU bundle, bench/gpu/bundle.sh), with the CUDA toolkit's
// headers that compile_check.sh puts beside the kernels.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/torch_call.h"
#include "server/gpu/step_graph.h"

namespace adapterd::gpu {
namespace {

class CudaStepGraph : public StepGraph {
 public:
  explicit CudaStepGraph(c10::Device device) : device_(device) {}
  void Replay() override {
    c10::cuda::CUDAGuard guard(device_);
    graph_.replay();
  }
  at::cuda::CUDAGraph& graph() { return graph_; }
  // The memory pool of its temporaries, once captured.
  at::cuda::MempoolId_t pool{0, 0};

 private:
  c10::Device device_;
  at::cuda::CUDAGraph graph_;
};

}  // namespace

bool StepGraphsBuilt() { return true; }

absl::StatusOr<std::unique_ptr<StepGraph>> CaptureStepGraph(c10::Device device, const std::function<void()>& body,
                                                            const StepGraph* share_memory_with) {
  if (!device.is_cuda()) {
    return absl::UnimplementedError(absl::StrCat("CUDA graphs on ", device.str(), ": not a CUDA device"));
  }
  absl::StatusOr<std::unique_ptr<StepGraph>> out = TorchCall("CUDA graph capture", [&] {
    auto g = std::make_unique<CudaStepGraph>(device);
    c10::cuda::CUDAGuard guard(device);
    const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(device.index());
    c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    // Nothing is captured that the current stream has not finished: a
    // capture is made once per bucket, so a wait here costs nothing.
    current.synchronize();
    {
      c10::cuda::CUDAStreamGuard on_side(side);
      const auto* other = dynamic_cast<const CudaStepGraph*>(share_memory_with);
      g->graph().capture_begin(other != nullptr ? other->pool : at::cuda::MempoolId_t{0, 0});
      try {
        body();
      } catch (...) {
        // End the capture, so that the side stream is usable again.
        try {
          g->graph().capture_end();
        } catch (...) {
        }
        throw;
      }
      g->graph().capture_end();
    }
    g->pool = g->graph().pool();
    return std::unique_ptr<StepGraph>(std::move(g));
  });
  if (!out.ok()) return absl::InternalError(absl::StrCat("CUDA graph capture failed: ", out.status().message()));
  return out;
}

Stream CurrentStream(c10::Device device) {
  if (!device.is_cuda()) return nullptr;
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}

}  // namespace adapterd::gpu
