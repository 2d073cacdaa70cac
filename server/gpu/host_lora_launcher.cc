#include "server/gpu/host_lora_launcher.h"

#include <c10/util/BFloat16.h>

#include <cmath>
#include <cstdint>
#include <numbers>

#include "absl/strings/str_cat.h"

namespace adapterd::gpu {
namespace {

float LoadAt(DType d, const void* p, int64_t i) {
  return d == DType::kF32 ? static_cast<const float*>(p)[i]
                          : static_cast<float>(static_cast<const c10::BFloat16*>(p)[i]);
}

void AddAt(DType d, void* p, int64_t i, float v) {
  if (d == DType::kF32) {
    static_cast<float*>(p)[i] += v;
  } else {
    auto* q = static_cast<c10::BFloat16*>(p) + i;
    *q = c10::BFloat16(static_cast<float>(*q) + v);
  }
}

double Apply(Act act, double v) {
  switch (act) {
    case Act::kRelu: return v > 0 ? v : 0;
    case Act::kGelu: return 0.5 * v * (1 + std::erf(v / std::numbers::sqrt2));
    case Act::kGeluTanh:
      return 0.5 * v * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (v + 0.044715 * v * v * v)));
    case Act::kSilu: return v / (1 + std::exp(-v));
    case Act::kTanh: return std::tanh(v);
    case Act::kSigmoid: return 1 / (1 + std::exp(-v));
    case Act::kIdentity: break;
  }
  return v;
}

// Calls fn(row, slot) for every row the launch covers.
template <typename Fn>
absl::Status ForEachRow(const LaunchRows& rows, Fn fn) {
  if (!rows.sgmv) {
    for (int r = 0; r < rows.rows; ++r) {
      if (rows.row_slot[r] >= 0) fn(r, rows.row_slot[r]);
    }
    return absl::OkStatus();
  }
  for (int i = 0; i < rows.num_segments; ++i) {
    const Segment& s = rows.segments[i];
    if (s.rows > rows.max_rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment ", i, " has ", s.rows, " rows, more than max_rows ", rows.max_rows));
    }
    if (s.slot < 0) continue;
    for (int r = s.start; r < s.start + s.rows; ++r) fn(r, s.slot);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status HostLoraLauncher::Shrink(const ShrinkArgs& a, const LaunchRows& rows) const {
  bool too_large = false;
  absl::Status status = ForEachRow(rows, [&](int row, int slot) {
    const int r = a.rank[slot];
    if (r <= 0) return;
    if (r > kMaxRank) {
      too_large = true;
      return;
    }
    const double scale = a.scale != nullptr ? a.scale[slot] : 1.0;
    const void* bias = a.bias != nullptr ? a.bias[slot] : nullptr;
    for (int k = 0; k < r; ++k) {
      double acc = 0;
      for (int i = 0; i < a.in; ++i) {
        acc += static_cast<double>(LoadAt(a.dtype, a.x, static_cast<int64_t>(row) * a.ldx + i)) *
               LoadAt(a.dtype, a.a_t[slot], static_cast<int64_t>(i) * r + k);
      }
      acc *= scale;
      if (bias != nullptr) acc += LoadAt(a.dtype, bias, k);
      a.tmp[static_cast<int64_t>(row) * a.ld_tmp + k] = static_cast<float>(Apply(a.act, acc));
    }
  });
  if (status.ok() && too_large) status = absl::InvalidArgumentError(absl::StrCat("a rank above ", kMaxRank));
  return status;
}

absl::Status HostLoraLauncher::Expand(const ExpandArgs& a, const LaunchRows& rows) const {
  if (a.num_slices < 1 || a.num_slices > kMaxSlices) {
    return absl::InvalidArgumentError(absl::StrCat("num_slices ", a.num_slices, " is not in [1, ", kMaxSlices, "]"));
  }
  return ForEachRow(rows, [&](int row, int slot) {
    for (int s = 0; s < a.num_slices; ++s) {
      const ExpandSlice& sl = a.slices[s];
      const int r = sl.rank[slot], off = sl.offset[slot];
      if (r <= 0) continue;
      const void* bias = sl.bias != nullptr ? sl.bias[slot] : nullptr;
      const float* t = a.tmp + static_cast<int64_t>(row) * a.ld_tmp + off;
      for (int o = 0; o < sl.out; ++o) {
        double acc = 0;
        for (int k = 0; k < r; ++k) acc += static_cast<double>(t[k]) * LoadAt(a.dtype, sl.b_t[slot], int64_t{k} * sl.out + o);
        if (bias != nullptr) acc += LoadAt(a.dtype, bias, o);
        AddAt(a.dtype, sl.y, static_cast<int64_t>(row) * sl.ldy + o, static_cast<float>(acc));
      }
    }
  });
}

}  // namespace adapterd::gpu
