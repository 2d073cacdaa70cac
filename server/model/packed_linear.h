#ifndef ADAPTERD_SERVER_MODEL_PACKED_LINEAR_H_
#define ADAPTERD_SERVER_MODEL_PACKED_LINEAR_H_

#include <ATen/core/Tensor.h>

#include <cstddef>

namespace adapterd::model {

// oneDNN's inner product on a base weight kept in the blocked layout that
// oneDNN's own GEMM reads, called through oneDNN's API directly.
//
// PackForInnerProduct reorders w [out, in] once, at load, into the layout
// oneDNN picks for a product of 64 rows: the packed copy is a 1-D tensor of
// w's dtype, as large as w plus oneDNN's padding, and independent of w.
// PackedInnerProduct then computes x [m, in] times w transposed (plus b) on
// that copy. It makes the primitive for each (m, in, out, dtype, bias) once
// and keeps it in a process-wide cache, so that a decode step's products
// pay neither the descriptor LibTorch's mkldnn operators build on every
// call (about 20 µs each) nor a reorder of the weight. Where oneDNN has no
// primitive that reads the packed layout at some row count, that product
// reads w itself, in its plain layout.
//
// Both take float32 and bfloat16 CPU tensors (PacksWeights in linear.h
// says where bfloat16 is packed). Both are thread-safe; the cache holds at
// most kMaxCachedPrimitives primitives and starts over when full. Errors
// are thrown as c10::Error, naming the product's shape.
at::Tensor PackForInnerProduct(const at::Tensor& w);

// x [m, in] (any strides; made contiguous), w [out, in] as packed, `packed`
// = PackForInnerProduct(w), b [out] or undefined. Returns [m, out] in x's
// dtype.
at::Tensor PackedInnerProduct(const at::Tensor& x, const at::Tensor& w, const at::Tensor& packed,
                              const at::Tensor& b);

// Primitives cached now (for tests), and the cache's bound.
size_t CachedInnerProducts();
inline constexpr size_t kMaxCachedPrimitives = 512;

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_PACKED_LINEAR_H_
