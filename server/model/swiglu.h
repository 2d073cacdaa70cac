// The SwiGLU activation of Llama's MLP, silu(gate) * up, in one pass.
#ifndef ADAPTERD_SERVER_MODEL_SWIGLU_H_
#define ADAPTERD_SERVER_MODEL_SWIGLU_H_

#include <ATen/core/Tensor.h>

namespace adapterd::model {

// Whether SwiGlu takes these tensors: both on the CPU, of one dtype
// (float32, bfloat16 or float16), 2-D, of one shape, with unit column
// stride (they may be column views of one fused gate/up product).
// Otherwise the caller keeps ATen's ops.
bool SwiGluSupports(const at::Tensor& gate, const at::Tensor& up);

// silu(gate) * up, with silu(g) = g / (1 + e^-g) computed in float32 and
// rounded to the dtype before the product, and the product rounded again,
// as transformers' act_fn(gate_proj(x)) * up_proj(x) rounds them, in one
// pass that writes one
// new contiguous [rows, columns] tensor instead of two ATen ops and their
// temporaries. Runs rows in parallel on ATen's pool when there are enough.
// Throws c10::Error when SwiGluSupports does not hold.
at::Tensor SwiGlu(const at::Tensor& gate, const at::Tensor& up);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_SWIGLU_H_
