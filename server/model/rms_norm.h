// RMSNorm as Llama and Qwen2 define it, in one pass per row.
#ifndef ADAPTERD_SERVER_MODEL_RMS_NORM_H_
#define ADAPTERD_SERVER_MODEL_RMS_NORM_H_

#include <ATen/core/Tensor.h>

namespace adapterd::model {

// LlamaRMSNorm / Qwen2RMSNorm of the rows of x [T, hidden] with `weight`
// [hidden]: each row is normalised in float32 (x * rsqrt(mean(x^2) + eps)),
// rounded to x's dtype, and multiplied by the weight in that dtype, as
// transformers does. On the CPU for contiguous float32, bfloat16 and float16
// rows it is one parallel pass over the rows; elsewhere it is the same
// formula in ATen ops. A pure function: safe from any thread.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// A residual sum and its RMSNorm: sum = x + h rounded to x's dtype (as
// ATen's add), normed = RmsNorm(sum, weight, eps). On the CPU for contiguous
// rows of one dtype both come from one pass over the rows; elsewhere from
// ATen's add and RmsNorm. The same values either way. Safe from any thread.
struct AddRmsNormResult {
  at::Tensor sum;
  at::Tensor normed;
};
AddRmsNormResult AddRmsNorm(const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight, double eps);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_RMS_NORM_H_
