// The seam between the base model's step and the adapter math at its
// projections.
#ifndef ADAPTERD_SERVER_MODEL_DELTA_BACKEND_H_
#define ADAPTERD_SERVER_MODEL_DELTA_BACKEND_H_

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "server/model/adapter_heads.h"
#include "server/model/adapter_weights.h"

namespace adapterd::model {

// One projection inside a group of projections that share their input and
// run as one GEMM (q/k/v, gate/up; o and down are groups of one): its
// output is columns [col, col + width) of the group's output.
struct ProjSlice {
  Proj proj = Proj::kQ;
  int64_t col = 0;
  int64_t width = 0;
};

// What a DeltaBackend prepares once per forward step for all of the
// step's calls (the segments do not change within a step): opaque to the
// model, which only passes it back.
class DeltaStep {
 public:
  virtual ~DeltaStep() = default;
};

// The tables of decode steps of one fixed shape (decode_graphs.h): `rows`
// rows, each through one adapter or the base, at addresses that never
// change, so that work captured once over AddTableDeltas() (a CUDA graph)
// computes whatever the last Fill() wrote. Made by a DeltaBackend; used
// from the model's forward thread only.
class DeltaTables : public DeltaStep {
 public:
  // Whether the tables can carry every effect of `a` at the projections.
  virtual bool Takes(const AdapterWeights& a) const = 0;
  // Writes the tables for a step: row i through `row_adapters[i]` (null:
  // the base), one entry per row, each of which Takes(). The copy to the
  // device is enqueued on the current stream; the adapters must outlive
  // the steps that use the tables.
  virtual void Fill(std::span<const AdapterWeights* const> row_adapters) = 0;
};

// A DeltaBackend applies the adapters of a step's rows at the base model's
// projections (IA3 rescaling, trained bias deltas, and LoRA deltas, DoRA
// included) and at its residual connections (bottleneck adapters), for
// every row segment through its own adapter. The base
// product itself is the model's; a backend never sees it computed, only
// adds to it. One backend is chosen when the model is created, for the
// model's device; nothing above the model knows which.
//
// A backend holds no per-step state of its own: what a step shares lives in
// the DeltaStep that BeginStep() returns and the model passes to the
// step's AddDeltas() calls. The calls may be made from the model's one
// forward thread, and an implementation may use parallel loops inside a
// call.
class DeltaBackend {
 public:
  virtual ~DeltaBackend() = default;

  // What computes the deltas, for logs: "aten", "sgmv-cuda", "sgmv-host".
  virtual const char* name() const = 0;

  // Called once per step that has adapter segments, before its other
  // calls: `rows` rows of activations in `dtype` on `device`, through
  // `segments`, in every one of `num_layers` layers. Null when the backend
  // prepares nothing. May throw (called inside the forward's TorchCall).
  virtual std::unique_ptr<DeltaStep> BeginStep(std::span<const AdapterSegment> segments, int64_t rows,
                                               int64_t num_layers, c10::Device device,
                                               at::ScalarType dtype) const {
    return nullptr;
  }

  // Tables for decode steps of `rows` rows of activations in `dtype` on
  // `device` (DeltaTables); null when the backend has none, and then only
  // steps of base rows take the fixed-shape path.
  virtual std::unique_ptr<DeltaTables> MakeTables(int64_t rows, int64_t num_layers, c10::Device device,
                                                  at::ScalarType dtype) const {
    return nullptr;
  }
  // Adds every row's LoRA deltas at each projection of `group` to `y` (as
  // AddDeltas), as `tables` say. The work enqueued is the same whatever
  // the tables hold, so it may be captured once and replayed.
  virtual void AddTableDeltas(const at::Tensor& x, at::Tensor& y, int64_t layer, std::span<const ProjSlice> group,
                              const DeltaTables& tables) const {}

  // `x` [T, in] with the rows of every segment whose adapter scales the
  // input of `p` (IA3 on a feed-forward module) rescaled; `x` itself (the
  // same tensor) when no segment does.
  virtual at::Tensor ScaleInputs(const at::Tensor& x, int64_t layer, Proj p,
                                 std::span<const AdapterSegment> segments) const = 0;

  // `y` [T, sum of widths] holds the group's base products for the input
  // `x` [T, in] (each projection's bias included; `bias` is the group's
  // [sum of widths] bias, undefined when the base has none). Adds each
  // segment's adapter effect at every projection of `group`, in place.
  // `y` may be a column view (row stride larger than its width). `step` is
  // what BeginStep() gave for these segments (null: prepared by the call).
  virtual void AddDeltas(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias, int64_t layer,
                         std::span<const ProjSlice> group, std::span<const AdapterSegment> segments,
                         const DeltaStep* step = nullptr) const = 0;

  // Bottleneck adapters at `loc` of `layer`: `out` [T, hidden] holds x + h
  // for every row (h the sublayer's output, x its residual input); the rows
  // of each segment whose adapter has a module there are replaced by the
  // module's output (AdapterHub's placement, see BottleneckForward).
  virtual void ApplyBottlenecks(const at::Tensor& x, const at::Tensor& h, at::Tensor& out, int64_t layer,
                                BottleneckLocation loc, std::span<const AdapterSegment> segments) const = 0;
};

// Which DeltaBackend a model uses (ModelOptions::delta_backend).
//  - kAuto: the segmented kernels on a CUDA device when the build has them
//    (SgmvDeltaBackend with gpu::MakeCudaLoraLauncher), else ATen products
//    and, on the CPU, direct row kernels (AtenDeltaBackend).
//  - kAten: AtenDeltaBackend on any device.
//  - kSgmv: SgmvDeltaBackend: on CUDA with the CUDA kernels (an error when
//    the build lacks them), on the CPU with the kernels' host version
//    (gpu::HostLoraLauncher; for tests: exact, not fast).
enum class DeltaBackendKind { kAuto, kAten, kSgmv };

// The backend of `kind` for a model on `device`; FailedPrecondition when
// `kind` cannot run there, naming both.
absl::StatusOr<std::unique_ptr<DeltaBackend>> MakeDeltaBackend(c10::Device device, DeltaBackendKind kind);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_DELTA_BACKEND_H_
