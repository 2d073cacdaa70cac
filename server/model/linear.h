#ifndef ADAPTERD_SERVER_MODEL_LINEAR_H_
#define ADAPTERD_SERVER_MODEL_LINEAR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace adapterd::model {

// at::linear(x, w, b) for the base model's products, with the few-row ones
// on the CPU through SkinnyGemm (skinny_gemm.h): where x is a matrix of
// 1 to `skinny_rows` rows and x, w and b (undefined: no bias) are fp32 or
// bfloat16 CPU tensors of one dtype, w contiguous and autograd off, the
// columns of the output are split over ATen's threads and each row of w is
// read once. Otherwise, and with skinny_rows 0, it is at::linear. Results
// agree with at::linear to the rounding of a different summation order.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t skinny_rows);

// The most rows at which SkinnyGemm beats LibTorch's GEMM in `dtype` on
// this CPU, as adapterd_skinny_gemm_bench measured them (docs/benchmarks.md):
// float32 32; bfloat16 8 where LibTorch's bfloat16 GEMM runs on AMX tiles
// and 32 where it does not; 0 for other dtypes.
int64_t DefaultSkinnyRows(at::ScalarType dtype);

// Whether Linear() takes the SkinnyGemm path for these arguments.
bool TakesSkinnyPath(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t skinny_rows);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_LINEAR_H_
