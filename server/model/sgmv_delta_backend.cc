#include "server/model/sgmv_delta_backend.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "server/gpu/step_graph.h"
#include "server/model/adapter_ops.h"

namespace adapterd::model {
namespace {

std::optional<gpu::DType> KernelDType(at::ScalarType t) {
  if (t == at::kFloat) return gpu::DType::kF32;
  if (t == at::kBFloat16) return gpu::DType::kBF16;
  return std::nullopt;
}

// Whether the kernels read `m` for activations in `dtype` on `device`.
bool Readable(const LoraModule& m, c10::Device device, at::ScalarType dtype) {
  return !m.dora_scale.defined() && m.a_t.scalar_type() == dtype && m.b_t.scalar_type() == dtype &&
         m.a_t.device() == device && m.b_t.device() == device && m.a_t.is_contiguous() && m.b_t.is_contiguous() &&
         m.rank() > 0 && m.rank() <= gpu::kMaxRank;
}

// Per layer, projection and slot (in that order, `slots` slots): each
// slot's A^T and B^T pointers, rank (0 where the kernels do not read a
// module there) and scale.
struct ModuleTables {
  ModuleTables(int64_t layers, int slots)
      : slots(slots),
        cells(static_cast<size_t>(layers) * kNumProj * static_cast<size_t>(slots)),
        a_ts(cells, nullptr),
        b_ts(cells, nullptr),
        ranks(cells, 0),
        scales(cells, 0.0f) {}
  // Slot i through adapters[i], for layers from `first_layer`.
  void Fill(const std::vector<const AdapterWeights*>& adapters, int64_t first_layer, c10::Device device,
            at::ScalarType dtype) {
    const int64_t layers = static_cast<int64_t>(cells / kNumProj / static_cast<size_t>(slots));
    for (int64_t l = 0; l < layers; ++l) {
      for (int p = 0; p < kNumProj; ++p) {
        const size_t row = (static_cast<size_t>(l) * kNumProj + static_cast<size_t>(p)) * slots;
        for (size_t i = 0; i < adapters.size(); ++i) {
          const std::span<const LoraModule> modules = adapters[i]->Loras(first_layer + l, static_cast<Proj>(p));
          if (modules.size() != 1 || !Readable(modules[0], device, dtype)) continue;
          const LoraModule& m = modules[0];
          a_ts[row + i] = m.a_t.data_ptr();
          b_ts[row + i] = m.b_t.data_ptr();
          ranks[row + i] = static_cast<int>(m.rank());
          scales[row + i] = static_cast<float>(m.scale);
          max_rank = std::max(max_rank, ranks[row + i]);
        }
      }
    }
  }
  int slots;
  size_t cells;
  std::vector<const void*> a_ts, b_ts;
  std::vector<int> ranks;
  std::vector<float> scales;
  int max_rank = 0;
};

// Host bytes of tables, each at an 8-byte aligned offset.
class TableBuffer {
 public:
  template <typename T>
  size_t Add(const std::vector<T>& v) {
    const size_t off = (bytes_.size() + 7) & ~size_t{7};
    bytes_.resize(off + v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(bytes_.data() + off, v.data(), v.size() * sizeof(T));
    return off;
  }
  std::vector<char>& bytes() { return bytes_; }

 private:
  std::vector<char> bytes_;
};

// Where a launcher reads `buf`: the bytes themselves, moved into `host`
// (a host launcher), or a device copy made from pinned memory without a
// synchronisation, in `device_copy`. Returns the tables' base address.
const char* Place(bool host_memory, TableBuffer& buf, c10::Device device, std::vector<char>& host,
                  at::Tensor& device_copy) {
  if (host_memory) {
    host = std::move(buf.bytes());
    return host.data();
  }
  const std::vector<char>& bytes = buf.bytes();
  at::Tensor pinned =
      at::empty({static_cast<int64_t>(bytes.size())}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(pinned.data_ptr(), bytes.data(), bytes.size());
  // The copy keeps the pinned block until it has run.
  device_copy = pinned.to(device, /*non_blocking=*/true);
  return static_cast<const char*>(device_copy.data_ptr());
}

// The tables of one step, for layers [first_layer, first_layer + layers):
// per layer and projection, every slot's A^T and B^T pointers, rank (0:
// the kernels leave the slot's rows alone there) and scale; each output
// slice's tmp column per slot; the segments and the row -> slot map. Held
// in host memory and, for a device launcher, in one device copy made from
// pinned memory without a synchronisation.
class SgmvStep : public DeltaStep {
 public:
  int64_t first_layer = 0, layers = 0;
  int slots = 0;
  int max_rank = 0;  // R: slice j's tmp columns start at j * R
  size_t num_segments = 0;
  std::vector<int> slot_of;  // per segment
  std::vector<int> ranks;    // host copy of the rank tables [layers][kNumProj][slots]
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  at::ScalarType dtype = at::kFloat;
  gpu::LaunchRows rows;

  int Rank(int64_t layer, Proj p, int slot) const { return ranks[Index(layer, p) + slot]; }
  bool AnyRank(int64_t layer, Proj p) const {
    const auto* r = ranks.data() + Index(layer, p);
    return std::any_of(r, r + slots, [](int v) { return v > 0; });
  }
  const void* const* ATs(int64_t layer, Proj p) const { return Table<const void*>(a_off, layer, p); }
  const void* const* BTs(int64_t layer, Proj p) const { return Table<const void*>(b_off, layer, p); }
  const int* RankTable(int64_t layer, Proj p) const { return Table<int>(rank_off, layer, p); }
  const float* Scales(int64_t layer, Proj p) const { return Table<float>(scale_off, layer, p); }
  const int* Columns(int slice) const {
    return reinterpret_cast<const int*>(base + col_off) + static_cast<size_t>(slice) * slots;
  }

  const char* base = nullptr;  // the tables: in `host` or in `device_copy`
  size_t a_off = 0, b_off = 0, rank_off = 0, scale_off = 0, col_off = 0;
  std::vector<char> host;  // for a host launcher
  at::Tensor device_copy;  // for a device launcher

 private:
  size_t Index(int64_t layer, Proj p) const {
    return (static_cast<size_t>(layer - first_layer) * kNumProj + static_cast<size_t>(p)) * slots;
  }
  template <typename T>
  const T* Table(size_t off, int64_t layer, Proj p) const {
    return reinterpret_cast<const T*>(base + off) + Index(layer, p);
  }
};

void ThrowIfError(const absl::Status& s) {
  if (!s.ok()) throw std::runtime_error(std::string(s.message()));
}

std::unique_ptr<SgmvStep> MakeStep(bool host_memory, std::span<const AdapterSegment> segments, int64_t rows,
                                   int64_t first_layer, int64_t layers, c10::Device device, at::ScalarType dtype) {
  auto step = std::make_unique<SgmvStep>();
  step->first_layer = first_layer;
  step->layers = layers;
  step->device = device;
  step->dtype = dtype;
  step->num_segments = segments.size();
  std::vector<const AdapterWeights*> adapters;
  for (const AdapterSegment& s : segments) {
    auto it = std::find(adapters.begin(), adapters.end(), s.adapter);
    if (it == adapters.end()) it = adapters.insert(adapters.end(), s.adapter);
    step->slot_of.push_back(static_cast<int>(it - adapters.begin()));
  }
  const int n = static_cast<int>(adapters.size());
  step->slots = n;
  ModuleTables t(layers, n);
  t.Fill(adapters, first_layer, device, dtype);
  step->ranks = t.ranks;
  step->max_rank = t.max_rank;
  std::vector<int> cols(static_cast<size_t>(gpu::kMaxSlices) * n);
  for (int j = 0; j < gpu::kMaxSlices; ++j) std::fill_n(cols.begin() + j * n, n, j * step->max_rank);
  std::vector<gpu::Segment> segs;
  std::vector<int> row_slot(static_cast<size_t>(rows), -1);
  int max_rows = 0;
  for (size_t k = 0; k < segments.size(); ++k) {
    const auto start = static_cast<int>(segments[k].start), len = static_cast<int>(segments[k].rows);
    segs.push_back({start, len, step->slot_of[k]});
    std::fill(row_slot.begin() + start, row_slot.begin() + start + len, step->slot_of[k]);
    max_rows = std::max(max_rows, len);
  }
  TableBuffer buf;
  step->a_off = buf.Add(t.a_ts);
  step->b_off = buf.Add(t.b_ts);
  step->rank_off = buf.Add(t.ranks);
  step->scale_off = buf.Add(t.scales);
  step->col_off = buf.Add(cols);
  const size_t seg_off = buf.Add(segs), row_off = buf.Add(row_slot);
  step->base = Place(host_memory, buf, device, step->host, step->device_copy);
  gpu::LaunchRows& r = step->rows;
  r.sgmv = gpu::ChooseSgmv(max_rows);
  if (r.sgmv) {
    r.segments = reinterpret_cast<const gpu::Segment*>(step->base + seg_off);
    r.num_segments = static_cast<int>(segs.size());
    r.max_rows = max_rows;
  } else {
    r.row_slot = reinterpret_cast<const int*>(step->base + row_off);
    r.rows = static_cast<int>(rows);
  }
  return step;
}

// One shrink per projection of `group` that some slot has a module at, then
// one expand for the group: every readable module's delta added to y.
// With `every_projection` (fixed tables), every projection is launched,
// whatever the tables hold.
void Launch(const gpu::LoraLauncher& launcher, const SgmvStep& step, const at::Tensor& x, at::Tensor& y,
            int64_t layer, std::span<const ProjSlice> group, bool every_projection = false) {
  const int S = static_cast<int>(group.size()), R = step.max_rank;
  std::array<bool, gpu::kMaxSlices> used{};
  bool any = false;
  for (int j = 0; j < S; ++j) any |= used[j] = every_projection || step.AnyRank(layer, group[j].proj);
  if (!any) return;
  gpu::LaunchRows rows = step.rows;
  rows.stream = gpu::CurrentStream(x.device());
  const gpu::DType dtype = *KernelDType(step.dtype);
  const int ld_tmp = S * R;
  at::Tensor tmp = at::empty({x.size(0), ld_tmp}, x.options().dtype(at::kFloat));
  for (int j = 0; j < S; ++j) {
    if (!used[j]) continue;
    const Proj p = group[j].proj;
    gpu::ShrinkArgs a;
    a.dtype = dtype;
    a.x = x.data_ptr();
    a.ldx = x.stride(0);
    a.in = static_cast<int>(x.size(1));
    a.a_t = step.ATs(layer, p);
    a.rank = step.RankTable(layer, p);
    a.scale = step.Scales(layer, p);
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
    sl.b_t = step.BTs(layer, group[j].proj);
    sl.rank = step.RankTable(layer, group[j].proj);
    sl.offset = step.Columns(j);
    sl.y = static_cast<char*>(y.data_ptr()) + group[j].col * y.element_size();
    sl.ldy = y.stride(0);
    sl.out = static_cast<int>(group[j].width);
  }
  ThrowIfError(launcher.Expand(e, rows));
}

std::optional<gpu::Act> KernelAct(Activation a) {
  switch (a) {
    case Activation::kRelu: return gpu::Act::kRelu;
    case Activation::kGelu: return gpu::Act::kGelu;
    case Activation::kGeluTanh: return gpu::Act::kGeluTanh;
    case Activation::kSilu: return gpu::Act::kSilu;
    case Activation::kTanh: return gpu::Act::kTanh;
    case Activation::kSigmoid: return gpu::Act::kSigmoid;
    case Activation::kIdentity: return gpu::Act::kIdentity;
    case Activation::kLeakyRelu: return std::nullopt;
  }
  return std::nullopt;
}

// Whether the kernels read the two products of `m` for activations in
// `dtype` on `device`.
bool Readable(const BottleneckModule& m, c10::Device device, at::ScalarType dtype) {
  for (const at::Tensor* t : {&m.down_t, &m.down_b, &m.up_t, &m.up_b}) {
    if (!t->defined() || t->scalar_type() != dtype || t->device() != device || !t->is_contiguous()) return false;
  }
  return m.bottleneck() > 0 && m.bottleneck() <= gpu::kMaxRank;
}

// The per-slot tables and per-row inputs of the bottleneck launches of
// `segs` at `loc` of `layer` (see LaunchBottlenecks).
struct BottleneckBatch {
  std::vector<const BottleneckModule*> modules;  // per slot
  std::vector<const void*> down, down_b, up, up_b;
  std::vector<int> ranks, offsets, row_slot;
  std::vector<gpu::Segment> segs;
  at::Tensor input;  // [T, hidden]: each segment's LN_before(z); rows outside `segs` are not read
  std::vector<at::Tensor> residuals;  // per segment
  int max_rank = 0, max_rows = 0;
};

BottleneckBatch PrepareBottlenecks(const at::Tensor& x, const at::Tensor& h, int64_t layer, BottleneckLocation loc,
                                   std::span<const AdapterSegment> segs) {
  BottleneckBatch b;
  b.row_slot.assign(static_cast<size_t>(h.size(0)), -1);
  b.input = at::empty_like(h);
  for (const AdapterSegment& s : segs) {
    const BottleneckModule* m = s.adapter->FindBottleneck(layer, loc);
    auto it = std::find(b.modules.begin(), b.modules.end(), m);
    if (it == b.modules.end()) {
      it = b.modules.insert(b.modules.end(), m);
      b.down.push_back(m->down_t.data_ptr());
      b.down_b.push_back(m->down_b.data_ptr());
      b.up.push_back(m->up_t.data_ptr());
      b.up_b.push_back(m->up_b.data_ptr());
      b.ranks.push_back(static_cast<int>(m->bottleneck()));
      b.offsets.push_back(0);
      b.max_rank = std::max(b.max_rank, b.ranks.back());
    }
    const int slot = static_cast<int>(it - b.modules.begin());
    const auto start = static_cast<int>(s.start), rows = static_cast<int>(s.rows);
    b.segs.push_back({start, rows, slot});
    std::fill_n(b.row_slot.begin() + start, rows, slot);
    b.max_rows = std::max(b.max_rows, rows);
    BottleneckInput in = BottleneckPrepare(*m, h.narrow(0, s.start, s.rows), x.narrow(0, s.start, s.rows));
    b.input.narrow(0, s.start, s.rows).copy_(in.input);
    b.residuals.push_back(std::move(in.residual));
  }
  return b;
}

// The bottleneck adapters of `segs` (all with nonlinearity `act`) at `loc`
// of `layer`: the norms and residuals around them as AdapterHub computes
// them (BottleneckPrepare/Finish, per segment), the down projection (bias
// and nonlinearity included) as one shrink and the up projection as one
// expand over every segment's rows, each through its own adapter's slot.
void LaunchBottlenecks(const gpu::LoraLauncher& launcher, const at::Tensor& x, const at::Tensor& h,
                       at::Tensor& out, int64_t layer, BottleneckLocation loc, std::span<const AdapterSegment> segs,
                       gpu::Act act) {
  const int64_t T = h.size(0), H = h.size(1);
  BottleneckBatch b = PrepareBottlenecks(x, h, layer, loc, segs);
  TableBuffer buf;
  const size_t down_off = buf.Add(b.down), down_b_off = buf.Add(b.down_b), up_off = buf.Add(b.up),
               up_b_off = buf.Add(b.up_b), rank_off = buf.Add(b.ranks), offset_off = buf.Add(b.offsets),
               seg_off = buf.Add(b.segs), row_off = buf.Add(b.row_slot);
  std::vector<char> host;
  at::Tensor device_copy;
  const char* base = Place(launcher.host_memory(), buf, h.device(), host, device_copy);
  auto table = [&](size_t off) { return reinterpret_cast<const void* const*>(base + off); };
  gpu::LaunchRows rows;
  rows.sgmv = gpu::ChooseSgmv(b.max_rows);
  if (rows.sgmv) {
    rows.segments = reinterpret_cast<const gpu::Segment*>(base + seg_off);
    rows.num_segments = static_cast<int>(b.segs.size());
    rows.max_rows = b.max_rows;
  } else {
    rows.row_slot = reinterpret_cast<const int*>(base + row_off);
    rows.rows = static_cast<int>(T);
  }
  rows.stream = gpu::CurrentStream(h.device());
  const gpu::DType dtype = *KernelDType(h.scalar_type());
  at::Tensor tmp = at::empty({T, b.max_rank}, h.options().dtype(at::kFloat));
  gpu::ShrinkArgs a;
  a.dtype = dtype;
  a.x = b.input.data_ptr();
  a.ldx = b.input.stride(0);
  a.in = static_cast<int>(H);
  a.a_t = table(down_off);
  a.bias = table(down_b_off);
  a.rank = reinterpret_cast<const int*>(base + rank_off);
  a.act = act;
  a.tmp = tmp.data_ptr<float>();
  a.ld_tmp = b.max_rank;
  ThrowIfError(launcher.Shrink(a, rows));
  at::Tensor projected = at::zeros_like(h);  // up(act(down(input))), the expand adds into it
  gpu::ExpandArgs e;
  e.dtype = dtype;
  e.tmp = tmp.data_ptr<float>();
  e.ld_tmp = b.max_rank;
  e.num_slices = 1;
  gpu::ExpandSlice& sl = e.slices[0];
  sl.b_t = table(up_off);
  sl.bias = table(up_b_off);
  sl.rank = reinterpret_cast<const int*>(base + rank_off);
  sl.offset = reinterpret_cast<const int*>(base + offset_off);
  sl.y = projected.data_ptr();
  sl.ldy = projected.stride(0);
  sl.out = static_cast<int>(H);
  ThrowIfError(launcher.Expand(e, rows));
  for (size_t i = 0; i < segs.size(); ++i) {
    const AdapterSegment& s = segs[i];
    const BottleneckModule& m = *b.modules[static_cast<size_t>(b.segs[i].slot)];
    out.narrow(0, s.start, s.rows)
        .copy_(BottleneckFinish(m, projected.narrow(0, s.start, s.rows), h.narrow(0, s.start, s.rows),
                                x.narrow(0, s.start, s.rows), b.residuals[i]));
  }
}

// Fixed tables (DeltaTables): a slot per row, the largest rank the kernels
// take as every slice's tmp width, and per-row launches, so that nothing
// the launches are given depends on the adapters a step holds.
class SgmvTables : public DeltaTables {
 public:
  SgmvTables(bool host_memory, int64_t rows, int64_t layers, c10::Device device, at::ScalarType dtype)
      : host_memory_(host_memory), rows_(rows) {
    step_.layers = layers;
    step_.slots = static_cast<int>(rows);
    step_.max_rank = gpu::kMaxRank;
    step_.device = device;
    step_.dtype = dtype;
    size_t row_off = 0;
    std::vector<char> bytes = Build(std::vector<const AdapterWeights*>(static_cast<size_t>(rows)), &row_off);
    if (host_memory_) {
      step_.host = std::move(bytes);
      step_.base = step_.host.data();
    } else {
      step_.device_copy = at::empty({static_cast<int64_t>(bytes.size())}, at::TensorOptions().dtype(at::kByte).device(device));
      step_.base = static_cast<const char*>(step_.device_copy.data_ptr());
      Copy(bytes);
    }
    step_.rows.row_slot = reinterpret_cast<const int*>(step_.base + row_off);
    step_.rows.rows = static_cast<int>(rows);
  }

  bool Takes(const AdapterWeights& a) const override {
    if (a.kind() != AdapterKind::kLora || a.composed() || a.num_layers() != step_.layers) return false;
    for (int64_t l = 0; l < step_.layers; ++l) {
      for (int p = 0; p < kNumProj; ++p) {
        const Proj proj = static_cast<Proj>(p);
        const std::span<const LoraModule> m = a.Loras(l, proj);
        if (m.size() > 1 || (m.size() == 1 && !Readable(m[0], step_.device, step_.dtype))) return false;
        if (a.FindBiasDelta(l, proj) != nullptr || a.FindIa3(l, proj) != nullptr) return false;
      }
    }
    return true;
  }

  void Fill(std::span<const AdapterWeights* const> row_adapters) override {
    if (static_cast<int64_t>(row_adapters.size()) != rows_) {
      throw std::invalid_argument("DeltaTables::Fill: " + std::to_string(row_adapters.size()) + " rows for tables of " +
                                  std::to_string(rows_));
    }
    size_t row_off = 0;
    const std::vector<char> bytes = Build(row_adapters, &row_off);
    if (host_memory_) {
      std::memcpy(step_.host.data(), bytes.data(), bytes.size());
    } else {
      Copy(bytes);
    }
  }

  const SgmvStep& step() const { return step_; }

 private:
  // The tables' bytes for `row_adapters`, at offsets that depend only on
  // the row and layer counts.
  std::vector<char> Build(std::span<const AdapterWeights* const> row_adapters, size_t* row_off) {
    std::vector<const AdapterWeights*> adapters;
    std::vector<int> row_slot(static_cast<size_t>(rows_), -1);
    for (size_t i = 0; i < row_adapters.size(); ++i) {
      if (row_adapters[i] == nullptr) continue;
      auto it = std::find(adapters.begin(), adapters.end(), row_adapters[i]);
      if (it == adapters.end()) it = adapters.insert(adapters.end(), row_adapters[i]);
      row_slot[i] = static_cast<int>(it - adapters.begin());
    }
    ModuleTables t(step_.layers, step_.slots);
    t.Fill(adapters, 0, step_.device, step_.dtype);
    std::vector<int> cols(static_cast<size_t>(gpu::kMaxSlices) * step_.slots);
    for (int j = 0; j < gpu::kMaxSlices; ++j) std::fill_n(cols.begin() + j * step_.slots, step_.slots, j * gpu::kMaxRank);
    TableBuffer buf;
    step_.a_off = buf.Add(t.a_ts);
    step_.b_off = buf.Add(t.b_ts);
    step_.rank_off = buf.Add(t.ranks);
    step_.scale_off = buf.Add(t.scales);
    step_.col_off = buf.Add(cols);
    *row_off = buf.Add(row_slot);
    return std::move(buf.bytes());
  }
  // Into the device copy, from pinned memory, on the current stream.
  void Copy(const std::vector<char>& bytes) {
    at::Tensor pinned = at::empty({static_cast<int64_t>(bytes.size())},
                                  at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    std::memcpy(pinned.data_ptr(), bytes.data(), bytes.size());
    step_.device_copy.copy_(pinned, /*non_blocking=*/true);
  }

  bool host_memory_;
  int64_t rows_;
  SgmvStep step_;
};

}  // namespace

SgmvDeltaBackend::SgmvDeltaBackend(std::unique_ptr<gpu::LoraLauncher> launcher) : launcher_(std::move(launcher)) {}

std::unique_ptr<DeltaStep> SgmvDeltaBackend::BeginStep(std::span<const AdapterSegment> segments, int64_t rows,
                                                       int64_t num_layers, c10::Device device,
                                                       at::ScalarType dtype) const {
  if (!KernelDType(dtype).has_value() || device.is_cpu() != launcher_->host_memory()) return nullptr;
  return MakeStep(launcher_->host_memory(), segments, rows, 0, num_layers, device, dtype);
}

std::unique_ptr<DeltaTables> SgmvDeltaBackend::MakeTables(int64_t rows, int64_t num_layers, c10::Device device,
                                                        at::ScalarType dtype) const {
  if (rows <= 0 || !KernelDType(dtype).has_value() || device.is_cpu() != launcher_->host_memory()) return nullptr;
  return std::make_unique<SgmvTables>(launcher_->host_memory(), rows, num_layers, device, dtype);
}

void SgmvDeltaBackend::AddTableDeltas(const at::Tensor& x, at::Tensor& y, int64_t layer,
                                      std::span<const ProjSlice> group, const DeltaTables& tables) const {
  const auto* t = dynamic_cast<const SgmvTables*>(&tables);
  if (t == nullptr || x.scalar_type() != t->step().dtype || y.scalar_type() != x.scalar_type() || x.dim() != 2 ||
      x.size(0) != t->step().rows.rows || x.stride(1) != 1 || y.stride(1) != 1 ||
      group.size() > static_cast<size_t>(gpu::kMaxSlices)) {
    throw std::invalid_argument("SgmvDeltaBackend::AddTableDeltas: the activations do not fit the tables");
  }
  Launch(*launcher_, t->step(), x, y, layer, group, /*every_projection=*/true);
}

at::Tensor SgmvDeltaBackend::ScaleInputs(const at::Tensor& x, int64_t layer, Proj p,
                                         std::span<const AdapterSegment> segments) const {
  return aten_.ScaleInputs(x, layer, p, segments);
}

void SgmvDeltaBackend::AddDeltas(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias, int64_t layer,
                                 std::span<const ProjSlice> group, std::span<const AdapterSegment> segments,
                                 const DeltaStep* step_in) const {
  AtenDeltaBackend::ScaleOutputsAndAddBiasDeltas(y, layer, group, segments);
  const auto* step = dynamic_cast<const SgmvStep*>(step_in);
  std::unique_ptr<SgmvStep> own;
  const bool kernels = KernelDType(x.scalar_type()).has_value() && y.scalar_type() == x.scalar_type() &&
                       y.device() == x.device() && x.dim() == 2 && x.stride(1) == 1 && y.stride(1) == 1 &&
                       group.size() <= static_cast<size_t>(gpu::kMaxSlices) &&
                       x.device().is_cpu() == launcher_->host_memory();
  if (kernels && (step == nullptr || step->num_segments != segments.size() || step->dtype != x.scalar_type() ||
                  layer < step->first_layer || layer >= step->first_layer + step->layers)) {
    own = MakeStep(launcher_->host_memory(), segments, x.size(0), layer, 1, x.device(), x.scalar_type());
    step = own.get();
  }
  if (!kernels) {
    AtenDeltaBackend::AddLoraDeltas(x, y, bias, layer, group, segments);
    return;
  }
  // Modules the kernels do not read, projection by projection.
  for (const ProjSlice& slice : group) {
    std::vector<AdapterSegment> others;
    for (size_t k = 0; k < segments.size(); ++k) {
      if (segments[k].adapter->Loras(layer, slice.proj).empty()) continue;
      if (step->Rank(layer, slice.proj, step->slot_of[k]) == 0) others.push_back(segments[k]);
    }
    if (!others.empty()) AtenDeltaBackend::AddLoraDeltas(x, y, bias, layer, std::span(&slice, 1), others);
  }
  Launch(*launcher_, *step, x, y, layer, group);
}

void SgmvDeltaBackend::ApplyBottlenecks(const at::Tensor& x, const at::Tensor& h, at::Tensor& out, int64_t layer,
                                        BottleneckLocation loc, std::span<const AdapterSegment> segments) const {
  const bool kernels = KernelDType(out.scalar_type()).has_value() && h.scalar_type() == out.scalar_type() &&
                       h.device() == out.device() && out.device().is_cpu() == launcher_->host_memory() &&
                       h.dim() == 2 && h.is_contiguous() && out.is_contiguous();
  std::vector<AdapterSegment> others;
  std::map<gpu::Act, std::vector<AdapterSegment>> by_act;  // one launch pair per nonlinearity
  for (const AdapterSegment& s : segments) {
    const BottleneckModule* m = s.adapter->FindBottleneck(layer, loc);
    if (m == nullptr) continue;
    const std::optional<gpu::Act> act = KernelAct(m->act);
    if (kernels && act.has_value() && Readable(*m, out.device(), out.scalar_type())) {
      by_act[*act].push_back(s);
    } else {
      others.push_back(s);
    }
  }
  if (!others.empty()) aten_.ApplyBottlenecks(x, h, out, layer, loc, others);
  for (const auto& [act, segs] : by_act) LaunchBottlenecks(*launcher_, x, h, out, layer, loc, segs, act);
}

}  // namespace adapterd::model
