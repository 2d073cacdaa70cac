#include "server/model/lora_slot_pool.h"

#include <ATen/ATen.h>

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/common/torch_call.h"

namespace adapterd::model {
namespace {

// Regions start on 64-byte boundaries (32 elements of 2 bytes, 16 of 4).
constexpr int64_t kAlignElems = 32;

int64_t AlignUp(int64_t n) { return (n + kAlignElems - 1) / kAlignElems * kAlignElems; }

}  // namespace

// The free slots, shared by the pool and by every handle an AdapterWeights
// keeps, so that a handle may outlive the pool object.
struct LoraSlotPool::FreeList {
  absl::Mutex mu;
  std::vector<int64_t> free ABSL_GUARDED_BY(mu);  // taken from the back
  int64_t used ABSL_GUARDED_BY(mu) = 0;
  int64_t total = 0;
  std::function<void(int64_t, int64_t)> listener;  // set before the first Place()

  void Take(int64_t& slot) ABSL_LOCKS_EXCLUDED(mu) {
    int64_t now = 0;
    {
      absl::MutexLock lock(&mu);
      if (free.empty()) return;
      slot = free.back();
      free.pop_back();
      now = ++used;
    }
    if (listener) listener(now, total);
  }
  void Give(int64_t slot) ABSL_LOCKS_EXCLUDED(mu) {
    int64_t now = 0;
    {
      absl::MutexLock lock(&mu);
      free.push_back(slot);
      now = --used;
    }
    if (listener) listener(now, total);
  }
};

absl::StatusOr<std::unique_ptr<LoraSlotPool>> LoraSlotPool::Create(const ModelConfig& c, int64_t num_slots,
                                                                   int64_t max_rank, c10::Device device,
                                                                   c10::ScalarType dtype) {
  if (num_slots < 1) return absl::InvalidArgumentError("--adapter_slots must be >= 1 for a slot pool");
  if (max_rank < 1) return absl::InvalidArgumentError("--adapter_slot_rank must be >= 1");
  auto pool = std::unique_ptr<LoraSlotPool>(new LoraSlotPool());
  pool->num_slots_ = num_slots;
  pool->max_rank_ = max_rank;
  pool->device_ = device;
  pool->dtype_ = dtype;
  pool->num_layers_ = c.num_layers;
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  // (in, out) of q, k, v, o, gate, up, down.
  const std::pair<int64_t, int64_t> dims[kNumProj] = {{H, q}, {H, kv}, {H, kv}, {q, H}, {H, I}, {H, I}, {I, H}};
  int64_t offset = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const auto& [in, out] : dims) {
      Region r;
      r.in = in;
      r.out = out;
      r.a_offset = offset;
      offset += AlignUp(in * max_rank);
      r.b_offset = offset;
      offset += AlignUp(max_rank * out);
      pool->regions_.push_back(r);
    }
  }
  pool->slot_elems_ = offset;
  if (num_slots > std::numeric_limits<int64_t>::max() / pool->slot_bytes()) {
    return absl::ResourceExhaustedError(absl::StrCat("--adapter_slots=", num_slots, " slots of ", pool->slot_bytes(),
                                                     " bytes (--adapter_slot_rank=", max_rank,
                                                     ") are more bytes than a device can address"));
  }
  const int64_t bytes = pool->bytes();
  absl::StatusOr<at::Tensor> storage = TorchCall("allocating the adapter slot pool", [&] {
    return at::zeros({num_slots, offset}, at::TensorOptions().dtype(dtype).device(device));
  });
  if (!storage.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "--adapter_slots=", num_slots, " with --adapter_slot_rank=", max_rank, " needs ", bytes, " bytes on ",
        device.str(), ", which could not be allocated: ", storage.status().message()));
  }
  pool->storage_ = *std::move(storage);
  pool->free_ = std::make_shared<FreeList>();
  pool->free_->total = num_slots;
  absl::MutexLock lock(&pool->free_->mu);
  for (int64_t s = num_slots - 1; s >= 0; --s) pool->free_->free.push_back(s);
  return pool;
}

LoraSlotPool::~LoraSlotPool() = default;

int64_t LoraSlotPool::slot_bytes() const {
  return slot_elems_ * static_cast<int64_t>(c10::elementSize(dtype_));
}

void LoraSlotPool::SetUsageListener(std::function<void(int64_t, int64_t)> listener) {
  free_->listener = std::move(listener);
  free_->listener(used_slots(), num_slots_);
}

int64_t LoraSlotPool::used_slots() const {
  absl::MutexLock lock(&free_->mu);
  return free_->used;
}

bool LoraSlotPool::Fits(const AdapterWeights& w) const {
  if (w.kind() != AdapterKind::kLora || w.composed() || w.num_layers() != num_layers_) return false;
  bool any = false;
  for (int64_t l = 0; l < num_layers_; ++l) {
    for (int p = 0; p < kNumProj; ++p) {
      const LoraModule* m = w.Find(l, static_cast<Proj>(p));
      if (m == nullptr) continue;
      const Region& r = RegionOf(l, static_cast<Proj>(p));
      const bool fits = m->rank() >= 1 && m->rank() <= max_rank_ && m->a_t.dim() == 2 && m->b_t.dim() == 2 &&
                        m->a_t.size(0) == r.in && m->b_t.size(1) == r.out && m->a_t.scalar_type() == dtype_ &&
                        m->b_t.scalar_type() == dtype_ && m->a_t.device() == device_ && m->b_t.device() == device_;
      if (!fits) return false;
      any = true;
    }
  }
  return any;
}

absl::StatusOr<LoraSlotPool::Placement> LoraSlotPool::Place(AdapterWeights& w) {
  if (!Fits(w)) return Placement::kNotEligible;
  int64_t slot = -1;
  free_->Take(slot);
  if (slot < 0) return Placement::kFull;
  // Gives the slot back when the weights let go of it (or when placing fails).
  std::shared_ptr<const void> handle(nullptr, [free = free_, slot](const void*) { free->Give(slot); });
  // Every module is copied before any is repointed: a failed copy leaves
  // `w` as it was.
  struct Moved {
    int64_t layer;
    Proj proj;
    LoraModule module;
  };
  std::vector<Moved> moved;
  absl::Status copied = TorchCall("copying an adapter into its slot", [&] {
    const at::Tensor base = storage_[slot];
    for (int64_t l = 0; l < num_layers_; ++l) {
      for (int p = 0; p < kNumProj; ++p) {
        const LoraModule* m = w.Find(l, static_cast<Proj>(p));
        if (m == nullptr) continue;
        const Region& r = RegionOf(l, static_cast<Proj>(p));
        const int64_t rank = m->rank();
        LoraModule placed = *m;
        placed.a_t = base.narrow(0, r.a_offset, r.in * rank).view({r.in, rank});
        placed.b_t = base.narrow(0, r.b_offset, rank * r.out).view({rank, r.out});
        placed.a_t.copy_(m->a_t, /*non_blocking=*/true);
        placed.b_t.copy_(m->b_t, /*non_blocking=*/true);
        placed.a = placed.a_t.t();
        placed.b = placed.b_t.t();
        moved.push_back({l, static_cast<Proj>(p), std::move(placed)});
      }
    }
  });
  if (!copied.ok()) return copied;
  for (Moved& m : moved) w.Set(m.layer, m.proj, std::move(m.module));
  w.KeepSlot(std::move(handle), slot);
  return Placement::kPlaced;
}

}  // namespace adapterd::model
