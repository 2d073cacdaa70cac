// Adapter deltas through the segmented LoRA kernels of server/gpu.
#ifndef ADAPTERD_SERVER_MODEL_SGMV_DELTA_BACKEND_H_
#define ADAPTERD_SERVER_MODEL_SGMV_DELTA_BACKEND_H_

#include <memory>

#include "server/gpu/lora_launcher.h"
#include "server/model/aten_delta_backend.h"
#include "server/model/delta_backend.h"

namespace adapterd::model {

// A SgmvDeltaBackend adds the LoRA deltas of a projection group with the
// kernels of lora_kernels.h, through its LoraLauncher: for every segment
// whose modules the kernels can read, one shrink launch per projection of
// the group (x read once per launch, every segment's own A^T) and one
// expand launch for all of the group's projections, BGMV when the
// segments are single rows, SGMV when they are longer. The per-slot
// pointer, rank and scale tables of a call are built on the host and
// reach the launcher's memory in one copy (from pinned memory, without a
// synchronisation, on a device).
//
// The kernels read a module when it is plain LoRA (no DoRA), alone at its
// projection (not a composite's), with A^T and B^T in the activations'
// dtype (float32 or bfloat16) and memory, and of rank at most
// gpu::kMaxRank. Every other adapter effect (IA3, bias deltas, DoRA,
// composites, mixed dtypes, bottleneck adapters) goes through
// AtenDeltaBackend, so the results are the same for every adapter.
//
// Owns its launcher. Holds no per-step state; the calls are made from the
// model's forward thread. Launch errors are thrown (the forward's
// TorchCall makes them a Status).
class SgmvDeltaBackend : public DeltaBackend {
 public:
  explicit SgmvDeltaBackend(std::unique_ptr<gpu::LoraLauncher> launcher);

  const char* name() const override { return launcher_->host_memory() ? "sgmv-host" : "sgmv-cuda"; }
  at::Tensor ScaleInputs(const at::Tensor& x, int64_t layer, Proj p,
                         std::span<const AdapterSegment> segments) const override;
  void AddDeltas(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias, int64_t layer,
                 std::span<const ProjSlice> group, std::span<const AdapterSegment> segments) const override;
  void ApplyBottlenecks(const at::Tensor& x, const at::Tensor& h, at::Tensor& out, int64_t layer,
                        BottleneckLocation loc, std::span<const AdapterSegment> segments) const override;

 private:
  std::unique_ptr<gpu::LoraLauncher> launcher_;
  AtenDeltaBackend aten_;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_SGMV_DELTA_BACKEND_H_
