// The index of each row's largest logit, for a step's greedy rows.
#ifndef ADAPTERD_SERVER_MODEL_ROW_ARGMAX_H_
#define ADAPTERD_SERVER_MODEL_ROW_ARGMAX_H_

#include <ATen/core/Tensor.h>

namespace adapterd::model {

// Whether RowArgmax takes `logits`: a contiguous 2-D float32 CPU tensor
// with at least one column. Otherwise the caller keeps at::argmax.
bool RowArgmaxSupports(const at::Tensor& logits);

// at::argmax(logits, 1), the same indices: each row's first largest value,
// or its first NaN where it has one, as a [rows] int64 tensor. Rows run in
// parallel on ATen's pool, each read in vectors of 16 lanes. Throws
// c10::Error when RowArgmaxSupports does not hold.
at::Tensor RowArgmax(const at::Tensor& logits);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_ROW_ARGMAX_H_
