// Adapter deltas with ATen products, and direct row kernels for the small
// segments of decode steps on the CPU.
#ifndef ADAPTERD_SERVER_MODEL_ATEN_DELTA_BACKEND_H_
#define ADAPTERD_SERVER_MODEL_ATEN_DELTA_BACKEND_H_

#include "server/model/delta_backend.h"

namespace adapterd::model {

// The DeltaBackend of the CPU, and of devices without kernels of ours. A segment of up to
// kSmallSegmentRows rows whose modules the row kernels can read (on the
// CPU, activations in float32, bfloat16 or float16) takes a direct loop
// over its rows (lora_row_kernel.h), four rows at a time: one pass over
// the shared input for all of a group's LoRA shrinks, then each
// projection's expand, each module's weights read once for the four rows.
// Segments run in parallel, the longest claimed first. Larger segments, and
// every segment on other devices, take two ATen products per module. Bottleneck adapters are ATen operations per
// segment (BottleneckForward). Stateless and immutable: safe from any
// thread.
class AtenDeltaBackend : public DeltaBackend {
 public:
  // Rows at or below this count per segment take the direct row loop: in
  // decode steps each segment is one or a few rows, and a prompt's segment
  // up to a few dozen, where per-call overhead (two products, the widening
  // of half-precision weights, the sum), not arithmetic, dominates. After
  // its first row, a segment's weights come from the cache. (With 8, the
  // 16-token prompts of `./x bench step` spent a tenth of the adapters'
  // time in the ATen products of one prefill step; going from 16 to 64 gave
  // the serving bench's 8-64-token prompts with 64 adapters 4-5% more
  // throughput, docs/benchmarks.md.)
  static constexpr int64_t kSmallSegmentRows = 64;

  const char* name() const override { return "aten"; }
  at::Tensor ScaleInputs(const at::Tensor& x, int64_t layer, Proj p,
                         std::span<const AdapterSegment> segments) const override;
  void AddDeltas(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias, int64_t layer,
                 std::span<const ProjSlice> group, std::span<const AdapterSegment> segments,
                 const DeltaStep* step = nullptr) const override;
  void ApplyBottlenecks(const at::Tensor& x, const at::Tensor& h, at::Tensor& out, int64_t layer,
                        BottleneckLocation loc, std::span<const AdapterSegment> segments) const override;

  // AddDeltas() in two halves, for backends that run only the second
  // differently: IA3 output scaling and bias deltas, then the LoRA deltas.
  static void ScaleOutputsAndAddBiasDeltas(at::Tensor& y, int64_t layer, std::span<const ProjSlice> group,
                                           std::span<const AdapterSegment> segments);
  static void AddLoraDeltas(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias, int64_t layer,
                            std::span<const ProjSlice> group, std::span<const AdapterSegment> segments);
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_ATEN_DELTA_BACKEND_H_
