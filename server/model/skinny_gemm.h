#ifndef ADAPTERD_SERVER_MODEL_SKINNY_GEMM_H_
#define ADAPTERD_SERVER_MODEL_SKINNY_GEMM_H_

#include <cstdint>

namespace adapterd::model {

// The product of a few activation rows with a linear layer's weight, y =
// x W^T + b, for the base projections of a decode step, where x has a
// handful of rows and the step's time is the time to read W. A general
// GEMM packs W before it multiplies, which at a few rows costs about as
// much as the product; this kernel reads each row of W from memory once,
// straight from where it is stored: four rows of W against four rows of x
// at a time, with the next four rows of W prefetched, over a slice of W
// that stays in L2 while every group of four rows of x passes over it.
// Both functions are pure functions over caller-owned buffers and are safe
// to call from many threads at once, on disjoint outputs.
//
// Elements of x, W, b and y are all fp32 or all bfloat16. Sums are fp32;
// a bfloat16 output is rounded once, to the nearest with ties to even. The
// file is compiled at -O3 and cloned for AVX-512, AVX2 + FMA and the
// baseline (cpu_clones.h).

enum class SkinnyType { kF32, kBF16 };

// The rows of x in the layout SkinnyGemm reads, `m` rows of `k` floats at
// `packed`: fp32 rows as they are; bfloat16 rows widened to fp32 with each
// row's k / 2 even elements first, then its k / 2 odd ones, then (k odd)
// its last one. Row i of x starts at x + i * ldx elements.
void SkinnyPackRows(const void* x, SkinnyType type, int64_t m, int64_t k, int64_t ldx, float* packed);

// y[i * ldy + n] = sum_j x[i][j] * w[n * k + j] (+ bias[n]) for i < m and
// n0 <= n < n1, where x is `m` packed rows. `bias` may be null. Any m
// works; past a few dozen rows a blocked GEMM is faster (linear.h).
void SkinnyGemm(const float* packed, int64_t m, int64_t k, const void* w, const void* bias, SkinnyType type,
                int64_t n0, int64_t n1, void* y, int64_t ldy);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_SKINNY_GEMM_H_
