#ifndef ADAPTERD_SERVER_MODEL_LINEAR_H_
#define ADAPTERD_SERVER_MODEL_LINEAR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace adapterd::model {

// oneDNN's copy of a base weight w [out, in], in the blocked layout its
// GEMM reads, made once at load (LibTorch's mkldnn::_reorder_linear_weight)
// so that products do not reorder w on every call, as at::linear does.
// Undefined where LibTorch was built without oneDNN or w is not a float32
// or bfloat16 CPU matrix: callers then pass it on as it is. The copy is as
// large as w and independent of it. May throw c10::Error.
at::Tensor PackLinearWeight(const at::Tensor& w);

// Which product Linear() computes for its arguments.
enum class LinearPath {
  kSkinny,  // SkinnyGemm: few rows, each row of w read once in place
  kPacked,  // oneDNN's GEMM on the packed copy of w
  kAten,    // at::linear
};

// x [m, in] times w [out, in] transposed, plus b (undefined: no bias): the
// base model's products.
// - Where x is a matrix of 1 to `skinny_rows` rows and x, w and b are fp32
//   or bfloat16 CPU tensors of one dtype, w contiguous and autograd off,
//   through SkinnyGemm (skinny_gemm.h): the output's columns are split over
//   ATen's threads and each row of w is read once.
// - Otherwise, where `packed` is PackLinearWeight(w) (defined), x a CPU
//   matrix of w's dtype and autograd off, through oneDNN's GEMM on the packed
//   copy.
// - Otherwise at::linear.
// All three agree to the rounding of a different summation order.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t skinny_rows,
                  const at::Tensor& packed = at::Tensor());

// The path Linear() takes for these arguments.
LinearPath ChooseLinearPath(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t skinny_rows,
                            const at::Tensor& packed = at::Tensor());

// The most rows at which SkinnyGemm beats LibTorch's GEMM in `dtype` on
// this CPU, as adapterd_skinny_gemm_bench measured them (docs/benchmarks.md):
// float32 32; bfloat16 8 where LibTorch's bfloat16 GEMM runs on AMX tiles
// and 32 where it does not, but 0 on AMX when the weights are packed
// (`packed`: oneDNN's GEMM on packed bfloat16 weights is as fast at one row
// and faster from a few); 0 for other dtypes.
int64_t DefaultSkinnyRows(at::ScalarType dtype, bool packed = false);

// Whether Linear() takes the SkinnyGemm path for these arguments.
bool TakesSkinnyPath(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t skinny_rows);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_LINEAR_H_
