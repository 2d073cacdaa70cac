#ifndef ADAPTERD_SERVER_MODEL_LORA_ROW_KERNEL_H_
#define ADAPTERD_SERVER_MODEL_LORA_ROW_KERNEL_H_

#include <cstdint>

namespace adapterd::model {

// Direct kernels for applying a low-rank delta to one row, or to a few rows
// of one adapter, used where a segment holds one row (decode) or a few dozen
// (a short prompt) and the two ATen matmuls would cost more in call overhead
// than in arithmetic. All are pure functions over caller-owned buffers and
// are safe to call from many threads at once.
//
// Activations and accumulators are fp32. The delta's A and B may be stored
// in fp32, fp16 or bf16 (an adapter saved in half precision keeps its dtype
// on a fp32 base: half the memory and half the bytes each step reads); they
// are widened exactly on load, so the arithmetic is the fp32 product of the
// stored values.
//
// Each module's weights are read once per step, from memory, so the kernels
// are written for bandwidth: ranks 8, 16 and 32 keep their sums in vector
// registers with two rows in flight, bfloat16 is widened as word pairs (no
// shuffles), both kernels ask for the weights' lines ahead of their reads,
// and the expand reads B^T front to back with its sums in L1, writing y
// once. Other ranks take a plain loop. The file is compiled at -O3 and each
// function is cloned for AVX-512 and AVX2 + FMA + F16C with a baseline
// fallback chosen at load time (cpu_clones.h), so the binary still runs on
// any x86-64.

enum class LoraWeightType { kF32, kF16, kBF16 };

// tmp[k] = scale * sum_i x[i] * a_t[i * r + k] for k < r. `a_t` is [in, r]
// elements of `type`.
void LoraShrinkRow(const float* x, const void* a_t, LoraWeightType type, int64_t in, int64_t r,
                   float scale, float* tmp);

// The shrinks of `count` modules that share the input (a group's q, k and
// v, or gate and up), in one pass over x: tmp[m * r + k] = scales[m] *
// sum_i x[i] * a_ts[m][i * r + k] for m < count, k < r. Every module has
// rank r and elements of `type`.
void LoraShrinkRowMulti(const float* x, const void* const* a_ts, int64_t count, LoraWeightType type,
                        int64_t in, int64_t r, const float* scales, float* tmp);

// y[o] += sum_k tmp[k] * b_t[k * out + o] for o < out. `b_t` is [r, out]
// elements of `type`.
void LoraExpandRow(const float* tmp, const void* b_t, LoraWeightType type, int64_t r, int64_t out,
                   float* y);

// The kernels above for `rows` rows at once (a prompt's rows that apply
// one adapter): row j's input is at x + j * x_stride, its sums at tmp + j *
// tmp_stride (count * r of them, module m's at m * r) and its output at y + j
// * y_stride. Each module's weights are read once for up to four rows, from
// registers and L1 rather than once per row. Every row's results are those
// of the one-row kernels above, bit for bit, so a row's delta does not depend
// on how many rows of its adapter share the step.
void LoraShrinkRows(const float* x, int64_t x_stride, int64_t rows, const void* const* a_ts, int64_t count,
                    LoraWeightType type, int64_t in, int64_t r, const float* scales, float* tmp,
                    int64_t tmp_stride);
void LoraExpandRows(const float* tmp, int64_t tmp_stride, int64_t rows, const void* b_t, LoraWeightType type,
                    int64_t r, int64_t out, float* y, int64_t y_stride);

// Asks for the first lines of a module's B^T ([r, out] elements of
// `type`), where a shrink comes before its expand: the expand then does not
// start on a miss.
void LoraPrefetchExpand(const void* b_t, LoraWeightType type, int64_t r, int64_t out);

// For tests: 1 runs the kernels as on a CPU with AVX-512 (x86-64-v4), 0 as
// on one without (fewer sums in flight; the forms that suit clones which
// hold 16-lane vectors in memory), -1 as this CPU chooses. Results differ
// between the two only in the order of the sums.
void LoraRowWideVectorsForTest(int wide);

// Half-precision activation rows for the kernels above: dst[0, n) = src's
// n elements of `type` widened to fp32 (exactly), and back, rounded to the
// nearest with ties to even as c10::BFloat16 and c10::Half round (a NaN
// becomes bfloat16's quiet NaN 0x7FC0).
void WidenRow(const void* src, LoraWeightType type, int64_t n, float* dst);
void NarrowRow(const float* src, int64_t n, LoraWeightType type, void* dst);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_LORA_ROW_KERNEL_H_
