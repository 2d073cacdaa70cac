// Preallocated device memory for the LoRA weights of resident adapters.
#ifndef ADAPTERD_SERVER_MODEL_LORA_SLOT_POOL_H_
#define ADAPTERD_SERVER_MODEL_LORA_SLOT_POOL_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/adapter_weights.h"
#include "server/model/model_config.h"

namespace adapterd::model {

// A LoraSlotPool holds `num_slots` slots in one allocation on the model's
// device, made once at start-up, so that the LoRA matrices of resident
// adapters hold no allocations of their own (a load still builds its
// tensors first, and frees them once Place() has copied them). A slot has
// room for one adapter's A^T and B^T at every layer and projection, up to
// `max_rank`: the region of (layer, projection) holds A^T [in, r] at its
// start and B^T [r, out] after room for A^T of rank max_rank, each
// contiguous and 64-byte aligned, in the model's dtype.
//
// Place() copies an adapter's LoRA modules into a free slot and points the
// modules at it; the kernels and the ATen path then read the slot as they
// read any module. The slot returns to the pool when the AdapterWeights is
// destroyed (the weights keep it, and the pool's memory, alive). An
// adapter that does not fit a slot (another kind, a composite, a rank above
// max_rank, another dtype or device, shapes that are not the model's) or
// that finds every slot taken keeps its own tensors: placement is never
// needed for correctness.
//
// Thread-safe: Place() runs on loading threads while steps read the slots
// it filled earlier; a slot is written only while no AdapterWeights holds it.
class LoraSlotPool {
 public:
  // Allocates the slots. RESOURCE_EXHAUSTED naming --adapter_slots when the
  // device cannot hold them; INVALID_ARGUMENT for a count or rank below 1.
  static absl::StatusOr<std::unique_ptr<LoraSlotPool>> Create(const ModelConfig& config, int64_t num_slots,
                                                              int64_t max_rank, c10::Device device,
                                                              c10::ScalarType dtype);
  ~LoraSlotPool();
  LoraSlotPool(const LoraSlotPool&) = delete;
  LoraSlotPool& operator=(const LoraSlotPool&) = delete;

  enum class Placement { kPlaced, kNotEligible, kFull };
  // Moves `w`'s LoRA modules into a free slot (see the class comment). On
  // kNotEligible and kFull `w` is unchanged. Runs on the calling thread's
  // current stream (a loading thread's side stream on a GPU; see
  // DeviceUploadScope), so the caller waits for that stream before the
  // weights are used.
  absl::StatusOr<Placement> Place(AdapterWeights& w);

  // Whether Place() would put `w` in a slot were one free: a LoRA, not a
  // composite, every module of the model's shapes, dtype and device and of
  // rank at most max_rank().
  bool Fits(const AdapterWeights& w) const;

  int64_t num_slots() const { return num_slots_; }
  int64_t max_rank() const { return max_rank_; }
  // Bytes of one slot, and of the whole pool.
  int64_t slot_bytes() const;
  int64_t bytes() const { return slot_bytes() * num_slots_; }
  // Slots held by adapters now.
  int64_t used_slots() const;
  // Called with (used, total) slots whenever a slot is taken or given back,
  // on the thread that did it, with no lock held. Set it once, before any
  // Place(); it must outlive every AdapterWeights placed (slots are given
  // back when they are destroyed, which may be after the pool).
  void SetUsageListener(std::function<void(int64_t used, int64_t total)> listener);

 private:
  struct Region {
    int64_t a_offset = 0, b_offset = 0;  // elements from the slot's start
    int64_t in = 0, out = 0;
  };
  struct FreeList;
  LoraSlotPool() = default;
  const Region& RegionOf(int64_t layer, Proj p) const { return regions_[layer * kNumProj + static_cast<int>(p)]; }

  int64_t num_slots_ = 0;
  int64_t max_rank_ = 0;
  int64_t slot_elems_ = 0;
  c10::Device device_ = c10::Device(c10::DeviceType::CPU);
  c10::ScalarType dtype_ = c10::ScalarType::Float;
  int64_t num_layers_ = 0;
  std::vector<Region> regions_;  // [layer * kNumProj + projection]
  at::Tensor storage_;           // [num_slots, slot_elems]
  std::shared_ptr<FreeList> free_;  // shared with the handles the weights keep
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_LORA_SLOT_POOL_H_
