// Adapter deltas through the segmented LoRA kernels of server/gpu.
#ifndef ADAPTERD_SERVER_MODEL_SGMV_DELTA_BACKEND_H_
#define ADAPTERD_SERVER_MODEL_SGMV_DELTA_BACKEND_H_

#include <memory>

#include "server/gpu/lora_launcher.h"
#include "server/model/aten_delta_backend.h"
#include "server/model/delta_backend.h"

namespace adapterd::model {

// A SgmvDeltaBackend adds the LoRA deltas of a projection group with the
// kernels of lora_kernels.h, through its LoraLauncher: one shrink launch
// per projection of the group that some adapter of the step has a module
// at (x read once per launch, every slot's own A^T) and one expand launch
// for all of the group's projections, BGMV when the segments are single
// rows, SGMV when they are longer.
//
// The tables the kernels read are made once per step (BeginStep): a slot
// per distinct adapter, the row -> slot map and the segments, and for
// every layer and projection each slot's A^T and B^T pointers, rank and
// scale. They are built on the host and reach the launcher's memory in one
// copy per step (on a device, from pinned memory without a
// synchronisation). A call without a step makes its own.
//
// The kernels read a module when it is plain LoRA (no DoRA), alone at its
// projection (not a composite's), with A^T and B^T in the activations'
// dtype (float32 or bfloat16) and memory, and of rank at most
// gpu::kMaxRank. Bottleneck adapters run their down projection (bias and
// nonlinearity included) as one shrink and their up projection as one
// expand per nonlinearity over every segment's rows, the norms and
// residuals around them on ATen. Every other adapter effect (IA3, bias
// deltas, DoRA, composites, mixed dtypes, a leaky ReLU bottleneck) goes
// through AtenDeltaBackend, so the results are the same for every adapter.
//
// Owns its launcher. Holds no per-step state; the calls are made from the
// model's forward thread. Launch errors are thrown (the forward's
// TorchCall makes them a Status).
class SgmvDeltaBackend : public DeltaBackend {
 public:
  explicit SgmvDeltaBackend(std::unique_ptr<gpu::LoraLauncher> launcher);

  const char* name() const override { return launcher_->host_memory() ? "sgmv-host" : "sgmv-cuda"; }
  std::unique_ptr<DeltaStep> BeginStep(std::span<const AdapterSegment> segments, int64_t rows, int64_t num_layers,
                                       c10::Device device, at::ScalarType dtype) const override;
  // Tables of a slot per row (at most `rows` distinct adapters), for
  // modules of rank up to gpu::kMaxRank the kernels read, launched per row
  // (BGMV) for every projection; null for a dtype the kernels lack or
  // memory the launcher cannot address.
  std::unique_ptr<DeltaTables> MakeTables(int64_t rows, int64_t num_layers, c10::Device device,
                                          at::ScalarType dtype) const override;
  void AddTableDeltas(const at::Tensor& x, at::Tensor& y, int64_t layer, std::span<const ProjSlice> group,
                      const DeltaTables& tables) const override;
  at::Tensor ScaleInputs(const at::Tensor& x, int64_t layer, Proj p,
                         std::span<const AdapterSegment> segments) const override;
  void AddDeltas(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias, int64_t layer,
                 std::span<const ProjSlice> group, std::span<const AdapterSegment> segments,
                 const DeltaStep* step = nullptr) const override;
  void ApplyBottlenecks(const at::Tensor& x, const at::Tensor& h, at::Tensor& out, int64_t layer,
                        BottleneckLocation loc, std::span<const AdapterSegment> segments) const override;

 private:
  std::unique_ptr<gpu::LoraLauncher> launcher_;
  AtenDeltaBackend aten_;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_SGMV_DELTA_BACKEND_H_
