#include "server/model/rope_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

#include "server/common/parallel.h"
#include "server/model/cpu_clones.h"
#include "server/model/cpu_vec.h"

namespace adapterd::model {

enum class RopeType { kF32, kBF16, kF16 };

namespace {

using cpu::BF16;
using cpu::F16;
using cpu::F32;

// What one call moves: the pointers and the strides in elements.
struct RopeArgs {
  const void* q;
  const void* k;
  const void* v;
  const void* cos;
  const void* sin;
  const int64_t* slots;
  void* q_out;
  void* k_cache;
  void* v_cache;
  int64_t q_stride, k_stride, v_stride;  // row strides of q, k, v
  int64_t heads, kv_heads, hd;
};

// Heads [0, n) of one row: out = x * c + rotate_half(x) * s.
template <class W>
ADAPTERD_INLINE void RotateHeads(const typename W::T* x, const typename W::T* c, const typename W::T* s,
                                 typename W::T* out, int64_t n, int64_t hd) {
  const int64_t half = hd / 2;
  for (int64_t h = 0; h < n; ++h) {
    const typename W::T* xh = x + h * hd;
    typename W::T* oh = out + h * hd;
    int64_t d = 0;
    // 32 lanes at a time: every operand is read with the same Load32, so
    // the type's lane order never matters to these elementwise sums.
    for (; d + 32 <= half; d += 32) {
      cpu::V16 x1a, x1b, x2a, x2b, c1a, c1b, c2a, c2b, s1a, s1b, s2a, s2b;
      W::Load32(xh + d, x1a, x1b);
      W::Load32(xh + half + d, x2a, x2b);
      W::Load32(c + d, c1a, c1b);
      W::Load32(c + half + d, c2a, c2b);
      W::Load32(s + d, s1a, s1b);
      W::Load32(s + half + d, s2a, s2b);
      W::Store32(oh + d, W::NarrowN(x1a * c1a) + W::NarrowN(-(x2a * s1a)),
                 W::NarrowN(x1b * c1b) + W::NarrowN(-(x2b * s1b)));
      W::Store32(oh + half + d, W::NarrowN(x2a * c2a) + W::NarrowN(x1a * s2a),
                 W::NarrowN(x2b * c2b) + W::NarrowN(x1b * s2b));
    }
    for (; d < half; ++d) {
      // Each product and the sum rounded to the dtype, as transformers'
      // three ATen ops round them (exact in float32).
      const float x1 = W::Load(xh + d), x2 = W::Load(xh + half + d);
      oh[d] = W::Round(W::Narrow(x1 * W::Load(c + d)) + W::Narrow(-x2 * W::Load(s + d)));
      oh[half + d] = W::Round(W::Narrow(x2 * W::Load(c + half + d)) + W::Narrow(x1 * W::Load(s + half + d)));
    }
  }
}

template <class W>
ADAPTERD_INLINE void Rows(const RopeArgs& a, int64_t begin, int64_t end) {
  using T = typename W::T;
  const int64_t width = a.kv_heads * a.hd;
  for (int64_t t = begin; t < end; ++t) {
    const T* c = static_cast<const T*>(a.cos) + t * a.hd;
    const T* s = static_cast<const T*>(a.sin) + t * a.hd;
    RotateHeads<W>(static_cast<const T*>(a.q) + t * a.q_stride, c, s,
                   static_cast<T*>(a.q_out) + t * a.heads * a.hd, a.heads, a.hd);
    RotateHeads<W>(static_cast<const T*>(a.k) + t * a.k_stride, c, s,
                   static_cast<T*>(a.k_cache) + a.slots[t] * width, a.kv_heads, a.hd);
    std::memcpy(static_cast<T*>(a.v_cache) + a.slots[t] * width, static_cast<const T*>(a.v) + t * a.v_stride,
                static_cast<size_t>(width) * sizeof(T));
  }
}

}  // namespace

// Rows [begin, end) of the step; the loop cloned per instruction set.
void RopeRows(RopeType type, const RopeArgs& a, int64_t begin, int64_t end);
ADAPTERD_CLONES
void RopeRows(RopeType type, const RopeArgs& a, int64_t begin, int64_t end) {
  switch (type) {
    case RopeType::kF32:
      Rows<F32>(a, begin, end);
      break;
    case RopeType::kBF16:
      Rows<BF16>(a, begin, end);
      break;
    case RopeType::kF16:
      Rows<F16>(a, begin, end);
      break;
  }
}

bool RopeCacheSupports(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                       const at::Tensor& sin, const at::Tensor& k_cache, const at::Tensor& v_cache) {
  const at::ScalarType t = q.scalar_type();
  if (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf) return false;
  for (const at::Tensor* x : {&q, &k, &v, &cos, &sin, &k_cache, &v_cache}) {
    if (!x->device().is_cpu() || x->scalar_type() != t) return false;
  }
  for (const at::Tensor* x : {&q, &k, &v}) {
    if (x->dim() != 2 || x->stride(1) != 1) return false;
  }
  return cos.is_contiguous() && sin.is_contiguous() && k_cache.is_contiguous() && v_cache.is_contiguous();
}

void RopeAndWriteCache(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                       const at::Tensor& sin, std::span<const int64_t> write_slots, at::Tensor& q_out,
                       at::Tensor& k_cache, at::Tensor& v_cache) {
  TORCH_CHECK(RopeCacheSupports(q, k, v, cos, sin, k_cache, v_cache) && q_out.is_contiguous() &&
                  q_out.scalar_type() == q.scalar_type() && q_out.device().is_cpu(),
              "RoPE cache write needs CPU tensors of one dtype (float32, bfloat16 or float16)");
  const int64_t T = q.size(0), hd = k_cache.size(2), kv_heads = k_cache.size(1);
  TORCH_CHECK(hd % 2 == 0 && k_cache.dim() == 3 && v_cache.sizes() == k_cache.sizes(),
              "RoPE cache write: caches must be [slots, kv_heads, head_dim] with an even head_dim");
  TORCH_CHECK(q.size(1) % hd == 0 && q_out.numel() == q.numel() && q_out.size(0) == T,
              "RoPE cache write: q and q_out disagree on [T, heads * head_dim]");
  TORCH_CHECK(k.size(0) == T && v.size(0) == T && k.size(1) == kv_heads * hd && v.size(1) == kv_heads * hd,
              "RoPE cache write: k and v must be [T, kv_heads * head_dim]");
  TORCH_CHECK(cos.size(0) == T && sin.size(0) == T && cos.size(1) == hd && sin.size(1) == hd,
              "RoPE cache write: cos and sin must be [T, head_dim]");
  TORCH_CHECK(static_cast<int64_t>(write_slots.size()) == T, "RoPE cache write: one write slot per token");
  const int64_t slots = k_cache.size(0);
  for (const int64_t s : write_slots) {
    TORCH_CHECK(s >= 0 && s < slots, "RoPE cache write: slot ", s, " is outside the cache's ", slots, " slots");
  }
  if (T == 0) return;
  const RopeType type = q.scalar_type() == at::kFloat      ? RopeType::kF32
                        : q.scalar_type() == at::kBFloat16 ? RopeType::kBF16
                                                           : RopeType::kF16;
  const RopeArgs a{q.data_ptr(),    k.data_ptr(),     v.data_ptr(),       cos.data_ptr(),    sin.data_ptr(),
                   write_slots.data(), q_out.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), q.stride(0),
                   k.stride(0),     v.stride(0),      q.size(1) / hd,     kv_heads,          hd};
  // A decode row is a few hundred elements: threads only for prompt chunks.
  constexpr int64_t kElementsPerThread = int64_t{1} << 16;
  const int64_t grain = std::max<int64_t>(1, kElementsPerThread / (q.size(1) + 2 * kv_heads * hd));
  at::parallel_for(0, T, grain, [&](int64_t begin, int64_t end) { RopeRows(type, a, begin, end); });
}

}  // namespace adapterd::model
