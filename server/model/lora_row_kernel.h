#ifndef ADAPTERD_SERVER_MODEL_LORA_ROW_KERNEL_H_
#define ADAPTERD_SERVER_MODEL_LORA_ROW_KERNEL_H_

#include <cstdint>

namespace adapterd::model {

// Direct fp32 kernels for applying a low-rank delta to one row, used where a
// segment holds a handful of rows (decode) and the two ATen matmuls would cost
// more in call overhead than in arithmetic. Both are pure functions over
// caller-owned buffers and are safe to call from many threads at once.
//
// The file is compiled at -O3 and each function is cloned for x86-64-v3
// (AVX2 + FMA) with a baseline fallback chosen at load time, so the binary
// still runs on any x86-64.

// tmp[k] = scale * sum_i x[i] * a_t[i * r + k] for k < r. `a_t` is [in, r].
void LoraShrinkRow(const float* x, const float* a_t, int64_t in, int64_t r, float scale,
                   float* tmp);

// y[o] += sum_k tmp[k] * b_t[k * out + o] for o < out. `b_t` is [r, out].
void LoraExpandRow(const float* tmp, const float* b_t, int64_t r, int64_t out, float* y);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_LORA_ROW_KERNEL_H_
