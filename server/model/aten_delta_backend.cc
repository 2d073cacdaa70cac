#include "server/model/aten_delta_backend.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <span>
#include <vector>

#include "server/common/parallel.h"
#include "server/model/adapter_ops.h"
#include "server/model/lora_row_kernel.h"

namespace adapterd::model {
namespace {

bool RowCapable(std::span<const LoraModule> modules) {
  return std::all_of(modules.begin(), modules.end(), [](const LoraModule& m) { return m.row.ok; });
}

// ys (+)= m's delta for the rows xs, with two ATen products: scale * (xs
// A^T) B^T, or with DoRA ys + (mag - 1) (ys - bias) + mag * delta.
void AddLoraDelta(const at::Tensor& xs, at::Tensor ys, const LoraModule& m, const at::Tensor& bias) {
  // Weights kept in half precision on a fp32 base are widened (exactly).
  const auto widened = [&](const at::Tensor& w) {
    return w.scalar_type() == xs.scalar_type() ? w : w.to(xs.scalar_type());
  };
  at::Tensor delta = at::mm(at::mm(xs, widened(m.a_t)), widened(m.b_t));
  if (m.dora_scale.defined()) {
    at::Tensor base = bias.defined() ? ys - bias : ys;
    ys.add_((m.dora_scale - 1) * base + m.dora_scale * (delta * m.scale));
  } else {
    ys.add_(delta, m.scale);
  }
}

// y_row (+)= one DoRA module's delta, with tmp = scale * x_row A^T already
// computed. `delta` holds `out` floats (DoRA's scratch).
void ExpandRowDora(const float* tmp, float* y, int64_t out, const LoraModule::RowView& m, const float* bias,
                   float* delta) {
  std::fill(delta, delta + out, 0.0f);
  LoraExpandRow(tmp, m.b_t, m.type, m.rank, out, delta);
  const float* mag = m.dora_scale;
  for (int64_t o = 0; o < out; ++o) {
    const float base = bias != nullptr ? y[o] - bias[o] : y[o];
    y[o] += (mag[o] - 1.0f) * base + mag[o] * delta[o];
  }
}

// The same for `rows` rows (tmp's rows ldt apart, y's ldy apart): without
// DoRA, in one pass over B^T.
void ExpandRows(const float* tmp, int64_t ldt, float* y, int64_t ldy, int64_t rows, int64_t out,
                const LoraModule::RowView& m, const float* bias, float* delta) {
  if (m.dora_scale == nullptr) {
    LoraExpandRows(tmp, ldt, rows, m.b_t, m.type, m.rank, out, y, ldy);
    return;
  }
  for (int64_t j = 0; j < rows; ++j) ExpandRowDora(tmp + j * ldt, y + j * ldy, out, m, bias, delta);
}

// One LoRA module a small segment applies at one projection of the group.
struct RowModule {
  LoraModule::RowView view;
  float scale;
  const ProjSlice* slice;
};

// A segment of at most kSmallSegmentRows rows and every module it applies
// in the group (one per projection, or one per component of a composite):
// modules [begin, end) of the step's list.
struct SmallSegment {
  const AdapterSegment* segment;
  size_t begin, end;
};

LoraWeightType RowType(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? LoraWeightType::kBF16
         : t.scalar_type() == at::kHalf   ? LoraWeightType::kF16
                                          : LoraWeightType::kF32;
}

// Row `row` of a float32, bfloat16 or float16 matrix with row stride `ld`,
// widened to float32 (n elements), and back.
void LoadRow(const at::Tensor& t, int64_t row, int64_t n, float* dst) {
  const auto* base = static_cast<const char*>(t.data_ptr());
  WidenRow(base + row * t.stride(0) * t.element_size(), RowType(t), n, dst);
}

void StoreRow(const float* src, int64_t n, at::Tensor& t, int64_t row) {
  auto* base = static_cast<char*>(t.data_ptr());
  NarrowRow(src, n, RowType(t), base + row * t.stride(0) * t.element_size());
}

// Rows of one segment that share one pass over each module's weights.
constexpr int64_t kRowsAtOnce = 4;

// All of a segment's modules for up to kRowsAtOnce of its rows (x's rows
// ldx apart, y's ldy apart): when the modules share type and rank (a
// group's q, k and v of one adapter), their shrinks in one pass over x; then
// each module's expand into its projection's columns.
void ApplyRows(const float* xs, int64_t ldx, float* ys, int64_t ldy, int64_t rows, int64_t in,
               std::span<const RowModule> modules, const float* bias, std::vector<float>& tmp,
               std::vector<float>& delta) {
  constexpr size_t kMaxShared = 8;
  const LoraModule::RowView& first = modules.front().view;
  const int64_t r = first.rank, count = static_cast<int64_t>(modules.size());
  for (const RowModule& m : modules) LoraPrefetchExpand(m.view.b_t, m.view.type, m.view.rank, m.slice->width);
  const bool shared = modules.size() > 1 && modules.size() <= kMaxShared &&
                      std::all_of(modules.begin(), modules.end(), [&](const RowModule& m) {
                        return m.view.type == first.type && m.view.rank == r;
                      });
  if (shared) {
    const void* a_ts[kMaxShared];
    float scales[kMaxShared];
    for (size_t i = 0; i < modules.size(); ++i) {
      a_ts[i] = modules[i].view.a_t;
      scales[i] = modules[i].scale;
    }
    tmp.resize(static_cast<size_t>(rows * count * r));
    LoraShrinkRows(xs, ldx, rows, a_ts, count, first.type, in, r, scales, tmp.data(), count * r);
  }
  for (size_t i = 0; i < modules.size(); ++i) {
    const RowModule& m = modules[i];
    int64_t ldt = m.view.rank;
    if (shared) {
      ldt = count * r;
    } else {
      tmp.resize(static_cast<size_t>(rows * m.view.rank));
      LoraShrinkRows(xs, ldx, rows, &m.view.a_t, 1, m.view.type, in, m.view.rank, &m.scale, tmp.data(), ldt);
    }
    const float* t = tmp.data() + (shared ? i * static_cast<size_t>(r) : 0);
    ExpandRows(t, ldt, ys + m.slice->col, ldy, rows, m.slice->width, m.view,
               bias != nullptr ? bias + m.slice->col : nullptr, delta.data());
  }
}

// y (+)= every small segment's deltas, kRowsAtOnce rows at a time. Segments
// own disjoint rows, so they run in parallel without locks. Half-precision
// rows are widened to float32 once and rounded back once after all their
// modules.
void AddSmallSegments(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias,
                      std::span<const SmallSegment> small, std::span<const RowModule> modules) {
  const int64_t in = x.size(1), out = y.size(1);
  const bool wide = y.scalar_type() == at::kFloat;
  const at::Tensor bias_f = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
  const float* bp = bias_f.defined() ? bias_f.data_ptr<float>() : nullptr;
  const float* const x0 = wide ? x.data_ptr<float>() : nullptr;
  float* const y0 = wide ? y.data_ptr<float>() : nullptr;
  const int64_t ldx = x.stride(0), ldy = y.stride(0);
  // Each thread claims the next segment when done with its last, so a
  // thread that loses its core for a while (to a transport's thread) holds
  // back only the segments it has claimed, not half of the step's.
  const int64_t n = static_cast<int64_t>(small.size());
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(n, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    // Scratch kept by each thread from step to step: a step makes 32 or
    // more of these calls, and the threads are the same ones.
    thread_local std::vector<float> tmp, delta, xrows, yrows;
    delta.resize(static_cast<size_t>(out));
    if (!wide) {
      xrows.resize(static_cast<size_t>(kRowsAtOnce * in));
      yrows.resize(static_cast<size_t>(kRowsAtOnce * out));
    }
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      const AdapterSegment& s = *small[i].segment;
      const std::span<const RowModule> mods = modules.subspan(small[i].begin, small[i].end - small[i].begin);
      for (int64_t row = s.start; row < s.start + s.rows; row += kRowsAtOnce) {
        const int64_t rows = std::min(kRowsAtOnce, s.start + s.rows - row);
        if (wide) {
          ApplyRows(x0 + row * ldx, ldx, y0 + row * ldy, ldy, rows, in, mods, bp, tmp, delta);
          continue;
        }
        for (int64_t j = 0; j < rows; ++j) {
          LoadRow(x, row + j, in, xrows.data() + j * in);
          LoadRow(y, row + j, out, yrows.data() + j * out);
        }
        ApplyRows(xrows.data(), in, yrows.data(), out, rows, in, mods, bp, tmp, delta);
        for (int64_t j = 0; j < rows; ++j) StoreRow(yrows.data() + j * out, out, y, row + j);
      }
    }
  });
}

bool RowLoopDtype(at::ScalarType t) { return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf; }

}  // namespace

at::Tensor AtenDeltaBackend::ScaleInputs(const at::Tensor& x, int64_t layer, Proj p,
                                         std::span<const AdapterSegment> segments) const {
  at::Tensor in = x;
  for (const AdapterSegment& s : segments) {
    const Ia3Module* m = s.adapter->FindIa3(layer, p);
    if (m == nullptr || !m->scales_input) continue;
    if (in.is_same(x)) in = x.clone();
    in.narrow(0, s.start, s.rows).mul_(m->scale);
  }
  return in;
}

void AtenDeltaBackend::AddDeltas(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias, int64_t layer,
                                 std::span<const ProjSlice> group, std::span<const AdapterSegment> segments,
                                 const DeltaStep* /*step*/) const {
  for (const AdapterSegment& s : segments) s.adapter->PrefetchHeader();
  for (const AdapterSegment& s : segments) {
    for (const ProjSlice& slice : group) s.adapter->PrefetchLoras(layer, slice.proj);
  }
  ScaleOutputsAndAddBiasDeltas(y, layer, group, segments);
  AddLoraDeltas(x, y, bias, layer, group, segments);
}

void AtenDeltaBackend::ScaleOutputsAndAddBiasDeltas(at::Tensor& y, int64_t layer, std::span<const ProjSlice> group,
                                                    std::span<const AdapterSegment> segments) {
  for (const AdapterSegment& s : segments) {
    for (const ProjSlice& slice : group) {
      // Views only where there is work: a step holds many segments, and
      // each ATen view costs more than a decode row's arithmetic here.
      const Ia3Module* m = s.adapter->FindIa3(layer, slice.proj);
      const at::Tensor* d = s.adapter->FindBiasDelta(layer, slice.proj);
      const bool scales_output = m != nullptr && !m->scales_input;
      if (!scales_output && d == nullptr) continue;
      at::Tensor ys = y.narrow(1, slice.col, slice.width).narrow(0, s.start, s.rows);
      if (scales_output) ys.mul_(m->scale);
      // Trained biases: the base's bias is in y, the adapter's difference is added.
      if (d != nullptr) ys.add_(*d);
    }
  }
}

void AtenDeltaBackend::AddLoraDeltas(const at::Tensor& x, at::Tensor& y, const at::Tensor& bias, int64_t layer,
                                     std::span<const ProjSlice> group, std::span<const AdapterSegment> segments) {
  const bool direct = x.device().is_cpu() && RowLoopDtype(x.scalar_type()) && y.scalar_type() == x.scalar_type() &&
                      x.is_contiguous() && y.stride(1) == 1 && (!bias.defined() || bias.is_contiguous());
  // The step's list of small segments and their modules, kept by the
  // calling (engine) thread from call to call.
  thread_local std::vector<SmallSegment> small;
  thread_local std::vector<RowModule> row_modules;
  small.clear();
  row_modules.clear();
  for (const AdapterSegment& s : segments) {
    const size_t begin = row_modules.size();
    const bool row_capable = direct && s.rows <= kSmallSegmentRows;
    for (const ProjSlice& slice : group) {
      const std::span<const LoraModule> modules = s.adapter->Loras(layer, slice.proj);
      if (modules.empty()) continue;
      if (row_capable && RowCapable(modules)) {
        for (const LoraModule& m : modules) row_modules.push_back({m.row, static_cast<float>(m.scale), &slice});
        continue;
      }
      const at::Tensor slice_bias = bias.defined() ? bias.narrow(0, slice.col, slice.width) : at::Tensor();
      for (const LoraModule& m : modules) {
        AddLoraDelta(x.narrow(0, s.start, s.rows), y.narrow(1, slice.col, slice.width).narrow(0, s.start, s.rows), m,
                     slice_bias);
      }
    }
    if (row_modules.size() > begin) small.push_back({&s, begin, row_modules.size()});
  }
  // The threads claim the longest segments (prompts' rows) first, so that
  // the step's last claims are single decode rows and neither thread is left
  // with a whole prompt while the other waits. (std::sort, unlike
  // stable_sort, needs no buffer; ties go in row order.)
  std::sort(small.begin(), small.end(), [](const SmallSegment& a, const SmallSegment& b) {
    return a.segment->rows != b.segment->rows ? a.segment->rows > b.segment->rows
                                              : a.segment->start < b.segment->start;
  });
  if (!small.empty()) AddSmallSegments(x, y, bias, small, row_modules);
}

void AtenDeltaBackend::ApplyBottlenecks(const at::Tensor& x, const at::Tensor& h, at::Tensor& out, int64_t layer,
                                        BottleneckLocation loc, std::span<const AdapterSegment> segments) const {
  for (const AdapterSegment& s : segments) {
    const BottleneckModule* m = s.adapter->FindBottleneck(layer, loc);
    if (m == nullptr) continue;
    out.narrow(0, s.start, s.rows)
        .copy_(BottleneckForward(*m, h.narrow(0, s.start, s.rows), x.narrow(0, s.start, s.rows)));
  }
}

}  // namespace adapterd::model
