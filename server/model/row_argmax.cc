#include "server/model/row_argmax.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "server/common/parallel.h"
#include "server/model/cpu_clones.h"
#include "server/model/cpu_vec.h"

namespace adapterd::model {

namespace {

using cpu::V16;

// Row `x` of `n` values: the first index of its maximum, or of its first NaN.
// One pass: each lane keeps its largest value and the first position it
// was seen at (a later equal value does not replace it), and the answer is
// the smallest position among the lanes that hold the row's maximum. A row
// with a NaN, rare, is scanned again for its first.
ADAPTERD_INLINE int64_t ArgmaxRow(const float* x, int64_t n) {
  V16 best = V16{} - std::numeric_limits<float>::infinity();
  cpu::I16 at{}, pos{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  cpu::U16 nan{};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16, pos += 16) {
    const V16 v = cpu::LoadBytes<V16>(x + i);
    nan |= reinterpret_cast<cpu::U16>(v != v);
    const cpu::I16 greater = reinterpret_cast<cpu::I16>(v > best);
    best = greater ? v : best;
    at = greater ? pos : at;
  }
  bool any_nan = false;
  float m = -std::numeric_limits<float>::infinity();
  for (int l = 0; l < 16; ++l) {
    any_nan = any_nan || nan[l] != 0;
    m = std::max(m, best[l]);
  }
  int64_t found = n;
  for (int l = 0; l < 16; ++l) {
    if (i > 0 && best[l] == m) found = std::min<int64_t>(found, at[l]);
  }
  for (int64_t j = i; j < n; ++j) {
    any_nan = any_nan || std::isnan(x[j]);
    if (x[j] > m) {
      m = x[j];
      found = j;
    } else if (x[j] == m) {
      found = std::min(found, j);
    }
  }
  if (any_nan) {
    for (int64_t j = 0; j < n; ++j) {
      if (std::isnan(x[j])) return j;
    }
  }
  return found < n ? found : 0;  // a row of -inf only: at::argmax also answers 0
}

}  // namespace

// Rows [begin, end); the loop cloned per instruction set.
void ArgmaxRows(const float* logits, int64_t cols, int64_t* out, int64_t begin, int64_t end);
ADAPTERD_CLONES
void ArgmaxRows(const float* logits, int64_t cols, int64_t* out, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) out[r] = ArgmaxRow(logits + r * cols, cols);
}

bool RowArgmaxSupports(const at::Tensor& logits) {
  return logits.device().is_cpu() && logits.scalar_type() == at::kFloat && logits.dim() == 2 &&
         logits.size(1) > 0 && logits.is_contiguous();
}

at::Tensor RowArgmax(const at::Tensor& logits) {
  TORCH_CHECK(RowArgmaxSupports(logits), "row argmax needs a contiguous 2-D float32 CPU tensor with columns");
  const int64_t rows = logits.size(0), cols = logits.size(1);
  at::Tensor out = at::empty({rows}, logits.options().dtype(at::kLong));
  const float* x = logits.data_ptr<float>();
  int64_t* o = out.data_ptr<int64_t>();
  constexpr int64_t kElementsPerThread = int64_t{1} << 16;
  const int64_t grain = std::max<int64_t>(1, kElementsPerThread / cols);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) { ArgmaxRows(x, cols, o, begin, end); });
  return out;
}

}  // namespace adapterd::model
