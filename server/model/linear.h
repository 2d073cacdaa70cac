#ifndef ADAPTERD_SERVER_MODEL_LINEAR_H_
#define ADAPTERD_SERVER_MODEL_LINEAR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace adapterd::model {

// Whether PackLinearWeight packs weights of this dtype here: float32, and
// bfloat16 on a CPU with AVX512-BF16, where oneDNN's bfloat16 GEMM is fast.
bool PacksWeights(at::ScalarType dtype);

// oneDNN's copy of a base weight w [out, in], in the blocked layout its GEMM
// reads, made once at load (PackForInnerProduct, packed_linear.h): products
// on it skip the packing that LibTorch's GEMM does on every call (OpenBLAS
// for float32, oneDNN for bfloat16), and they call oneDNN's primitive
// directly, without a descriptor per call. From 24 to 64 rows that is
// 1.2-1.5x faster than at::linear in both dtypes
// (adapterd_skinny_gemm_bench, docs/benchmarks.md). Undefined where PacksWeights(w's dtype) is false or
// w is not a CPU matrix; callers pass an undefined result on as it is. The
// copy is as large as w and independent of it. May throw c10::Error.
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

// The most rows at which SkinnyGemm beats the GEMM it stands in for in
// `dtype` on this CPU, as adapterd_skinny_gemm_bench measured them
// (docs/benchmarks.md): float32 32 against LibTorch's GEMM and 16 against
// oneDNN on packed weights (`packed`); bfloat16 8 where the GEMM runs on AMX
// tiles, 2 against oneDNN on packed weights without AMX (an EPYC with
// AVX-512 bfloat16: oneDNN is faster from 4 rows on), and 32 against
// LibTorch's GEMM; 0 for other dtypes.
int64_t DefaultSkinnyRows(at::ScalarType dtype, bool packed = false);

// Whether Linear() takes the SkinnyGemm path for these arguments.
bool TakesSkinnyPath(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t skinny_rows);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_LINEAR_H_
