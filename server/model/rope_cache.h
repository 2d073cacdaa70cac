// Rotary position embedding and the KV cache write of one step, in one pass.
#ifndef ADAPTERD_SERVER_MODEL_ROPE_CACHE_H_
#define ADAPTERD_SERVER_MODEL_ROPE_CACHE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <span>

namespace adapterd::model {

// Whether RopeAndWriteCache takes these tensors: all on the CPU and of one
// dtype (float32, bfloat16 or float16); q, k and v 2-D with unit column
// stride (they may be column views of one fused projection); cos and sin
// contiguous; the caches contiguous. Otherwise the caller keeps ATen's ops.
bool RopeCacheSupports(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                       const at::Tensor& sin, const at::Tensor& k_cache, const at::Tensor& v_cache);

// For each token t of a step: q_out[t] = rope(q[t]), k_cache[write_slots[t]]
// = rope(k[t]) and v_cache[write_slots[t]] = v[t], where rope(x) is Llama's
// x * cos[t] + rotate_half(x) * sin[t] per head (rotate_half(x) = [-x2, x1]
// for the halves x1, x2 of a head), with each product and the sum rounded
// to the dtype as transformers' ATen ops round them. q is [T, heads * head_dim], k and v [T, kv_heads * head_dim],
// cos and sin [T, head_dim], q_out [T, heads, head_dim] (contiguous), the
// caches [slots, kv_heads, head_dim]. The same result as the ATen ops, in
// one pass over the step's rows instead of a dozen. Throws c10::Error, writing nothing, when a slot is
// outside the cache or the shapes disagree. Runs rows in parallel on
// ATen's pool when there are enough of them.
void RopeAndWriteCache(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                       const at::Tensor& sin, std::span<const int64_t> write_slots, at::Tensor& q_out,
                       at::Tensor& k_cache, at::Tensor& v_cache);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_ROPE_CACHE_H_
