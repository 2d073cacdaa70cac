#include "server/model/sgmv_delta_backend.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace adapterd::model {
namespace {

std::optional<gpu::DType> KernelDType(at::ScalarType t) {
  if (t == at::kFloat) return gpu::DType::kF32;
  if (t == at::kBFloat16) return gpu::DType::kBF16;
  return std::nullopt;
}

// Whether the kernels read `m` for activations `x`.
bool Readable(const LoraModule& m, const at::Tensor& x) {
  return !m.dora_scale.defined() && m.a_t.scalar_type() == x.scalar_type() &&
         m.b_t.scalar_type() == x.scalar_type() && m.a_t.device() == x.device() && m.b_t.device() == x.device() &&
         m.a_t.is_contiguous() && m.b_t.is_contiguous() && m.rank() > 0 && m.rank() <= gpu::kMaxRank;
}

// One adapter of a call: its module at each projection of the group (null
// where it has none there).
struct Slot {
  const AdapterWeights* adapter = nullptr;
  std::array<const LoraModule*, gpu::kMaxSlices> modules{};
};

// A segment the kernels take, and its slot.
struct KernelSegment {
  const AdapterSegment* segment;
  int slot;
};

// The host bytes of one call's tables, each at an 8-byte aligned offset.
class TableBuffer {
 public:
  template <typename T>
  size_t Add(const std::vector<T>& v) {
    const size_t off = (bytes_.size() + 7) & ~size_t{7};
    bytes_.resize(off + v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(bytes_.data() + off, v.data(), v.size() * sizeof(T));
    return off;
  }
  // The tables in the launcher's memory: the buffer itself on the host; on a
  // device, one copy from pinned memory, enqueued without a
  // synchronisation (the copy keeps the pinned block until it is done).
  // `keep` holds the device copy.
  const char* Place(bool host, const c10::Device& device, at::Tensor& keep) {
    if (host) return bytes_.data();
    at::Tensor pinned = at::empty({static_cast<int64_t>(bytes_.size())},
                                  at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    std::memcpy(pinned.data_ptr(), bytes_.data(), bytes_.size());
    keep = pinned.to(device, /*non_blocking=*/true);
    return static_cast<const char*>(keep.data_ptr());
  }

 private:
  std::vector<char> bytes_;
};

void ThrowIfError(const absl::Status& s) {
  if (!s.ok()) throw std::runtime_error(std::string(s.message()));
}

// The kernel launches of one call: the taken segments' LoRA deltas added to y.
void Launch(const gpu::LoraLauncher& launcher, gpu::DType dtype, const at::Tensor& x, at::Tensor& y,
            std::span<const ProjSlice> group, const std::vector<Slot>& slots,
            const std::vector<KernelSegment>& taken) {
  const int S = static_cast<int>(group.size()), n = static_cast<int>(slots.size());
  const int64_t T = x.size(0);
  int R = 0;
  for (const Slot& s : slots) {
    for (int j = 0; j < S; ++j) {
      if (s.modules[j] != nullptr) R = std::max(R, static_cast<int>(s.modules[j]->rank()));
    }
  }
  // Per projection j: every slot's A^T, B^T, rank, tmp column and scale.
  TableBuffer buf;
  std::array<size_t, gpu::kMaxSlices> a_off{}, b_off{}, rank_off{}, col_off{}, scale_off{};
  std::array<bool, gpu::kMaxSlices> used{};
  for (int j = 0; j < S; ++j) {
    std::vector<const void*> a_ts(n, nullptr), b_ts(n, nullptr);
    std::vector<int> ranks(n, 0), cols(n, j * R);
    std::vector<float> scales(n, 0.0f);
    for (int i = 0; i < n; ++i) {
      const LoraModule* m = slots[i].modules[j];
      if (m == nullptr) continue;
      used[j] = true;
      a_ts[i] = m->a_t.data_ptr();
      b_ts[i] = m->b_t.data_ptr();
      ranks[i] = static_cast<int>(m->rank());
      scales[i] = static_cast<float>(m->scale);
    }
    a_off[j] = buf.Add(a_ts);
    b_off[j] = buf.Add(b_ts);
    rank_off[j] = buf.Add(ranks);
    col_off[j] = buf.Add(cols);
    scale_off[j] = buf.Add(scales);
  }
  std::vector<gpu::Segment> segs;
  std::vector<int> row_slot(static_cast<size_t>(T), -1);
  int max_rows = 0;
  for (const KernelSegment& k : taken) {
    const auto start = static_cast<int>(k.segment->start), rows = static_cast<int>(k.segment->rows);
    segs.push_back({start, rows, k.slot});
    std::fill(row_slot.begin() + start, row_slot.begin() + start + rows, k.slot);
    max_rows = std::max(max_rows, rows);
  }
  const size_t seg_off = buf.Add(segs), row_off = buf.Add(row_slot);
  at::Tensor tables;
  const char* base = buf.Place(launcher.host_memory(), x.device(), tables);
  auto at_off = [&](size_t off) { return static_cast<const void*>(base + off); };

  gpu::LaunchRows rows;
  rows.sgmv = gpu::ChooseSgmv(max_rows);
  if (rows.sgmv) {
    rows.segments = static_cast<const gpu::Segment*>(at_off(seg_off));
    rows.num_segments = static_cast<int>(segs.size());
    rows.max_rows = max_rows;
  } else {
    rows.row_slot = static_cast<const int*>(at_off(row_off));
    rows.rows = static_cast<int>(T);
  }
  const int ld_tmp = S * R;
  at::Tensor tmp = at::empty({T, ld_tmp}, x.options().dtype(at::kFloat));
  for (int j = 0; j < S; ++j) {
    if (!used[j]) continue;
    gpu::ShrinkArgs a;
    a.dtype = dtype;
    a.x = x.data_ptr();
    a.ldx = x.stride(0);
    a.in = static_cast<int>(x.size(1));
    a.a_t = static_cast<const void* const*>(at_off(a_off[j]));
    a.rank = static_cast<const int*>(at_off(rank_off[j]));
    a.scale = static_cast<const float*>(at_off(scale_off[j]));
    a.tmp = tmp.data_ptr<float>() + static_cast<int64_t>(j) * R;
    a.ld_tmp = ld_tmp;
    ThrowIfError(launcher.Shrink(a, rows));
  }
  gpu::ExpandArgs e;
  e.dtype = dtype;
  e.tmp = tmp.data_ptr<float>();
  e.ld_tmp = ld_tmp;
  e.num_slices = S;
  for (int j = 0; j < S; ++j) {
    gpu::ExpandSlice& sl = e.slices[j];
    sl.b_t = static_cast<const void* const*>(at_off(b_off[j]));
    sl.rank = static_cast<const int*>(at_off(rank_off[j]));
    sl.offset = static_cast<const int*>(at_off(col_off[j]));
    sl.y = static_cast<char*>(y.data_ptr()) + group[j].col * y.element_size();
    sl.ldy = y.stride(0);
    sl.out = static_cast<int>(group[j].width);
  }
  ThrowIfError(launcher.Expand(e, rows));
}

}  // namespace

SgmvDeltaBackend::SgmvDeltaBackend(std::unique_ptr<gpu::LoraLauncher> launcher) : launcher_(std::move(launcher)) {}

at::Tensor SgmvDeltaBackend::ScaleInputs(const at::Tensor& x, int64_t layer, Proj p,
                                         std::span<const AdapterSegment> segments) const {
  return aten_.ScaleInputs(x, layer, p, segments);
}

void SgmvDeltaBackend::AddDeltas(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias, int64_t layer,
                                 std::span<const ProjSlice> group, std::span<const AdapterSegment> segments) const {
  AtenDeltaBackend::ScaleOutputsAndAddBiasDeltas(y, layer, group, segments);
  const std::optional<gpu::DType> dtype = KernelDType(x.scalar_type());
  const bool kernels = dtype.has_value() && y.scalar_type() == x.scalar_type() && y.device() == x.device() &&
                       x.dim() == 2 && x.stride(1) == 1 && y.stride(1) == 1 &&
                       group.size() <= static_cast<size_t>(gpu::kMaxSlices) &&
                       x.device().is_cpu() == launcher_->host_memory();
  std::vector<AdapterSegment> others;
  std::vector<Slot> slots;
  std::vector<KernelSegment> taken;
  for (const AdapterSegment& s : segments) {
    Slot slot{s.adapter, {}};
    bool any = false, readable = kernels;
    for (size_t j = 0; j < group.size(); ++j) {
      const std::span<const LoraModule> modules = s.adapter->Loras(layer, group[j].proj);
      if (modules.empty()) continue;
      any = true;
      if (modules.size() != 1 || !Readable(modules[0], x)) {
        readable = false;
      } else {
        slot.modules[j] = &modules[0];
      }
    }
    if (!any) continue;
    if (!readable) {
      others.push_back(s);
      continue;
    }
    auto it = std::find_if(slots.begin(), slots.end(), [&](const Slot& o) { return o.adapter == s.adapter; });
    if (it == slots.end()) it = slots.insert(slots.end(), slot);
    taken.push_back({&s, static_cast<int>(it - slots.begin())});
  }
  if (!others.empty()) AtenDeltaBackend::AddLoraDeltas(x, y, bias, layer, group, others);
  if (!taken.empty()) Launch(*launcher_, *dtype, x, y, group, slots, taken);
}

void SgmvDeltaBackend::ApplyBottlenecks(const at::Tensor& x, const at::Tensor& h, at::Tensor& out, int64_t layer,
                                        BottleneckLocation loc, std::span<const AdapterSegment> segments) const {
  aten_.ApplyBottlenecks(x, h, out, layer, loc, segments);
}

}  // namespace adapterd::model
