#ifndef ADAPTERD_SERVER_MODEL_STEP_LAYOUT_H_
#define ADAPTERD_SERVER_MODEL_STEP_LAYOUT_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "server/model/adapter_heads.h"
#include "server/model/llama_model.h"
#include "server/model/paged_attention.h"

namespace adapterd::model {

// Where one forward step's tokens go, worked out once on the host for all
// of the step's layers: each token's position and KV cache slot, the rows
// that attend in place (decode rows, one new token each, and on the CPU
// every token of a short prompt chunk, each with its causal context), the
// rows that produce logits and the head each goes through, the other prompt
// chunks' context slots and causal masks, and the row ranges that run
// through the same adapter. A StepLayout is built by
// Build() from a ForwardBatch and the block tables it points to, is not
// changed afterwards, and belongs to the step (one thread).
struct StepLayout {
  std::vector<int64_t> positions;    // per token
  std::vector<int64_t> write_slots;  // per token: where its K and V go
  std::vector<int64_t> logit_rows;   // rows whose hidden state goes to a head
  std::vector<HeadRow> heads;        // per logit row: which head
  std::vector<DecodeRow> decode_rows;
  // Per sequence: a prompt chunk's context slots [ctx + n] on the device;
  // undefined for a sequence whose rows are in decode_rows.
  std::vector<at::Tensor> read_slots;
  // Per sequence: a prompt chunk's mask [n, ctx + n] (bottom-right aligned)
  // where it follows cached context; nullopt otherwise (SDPA's causal flag).
  std::vector<std::optional<at::Tensor>> masks;
  // Row ranges through one adapter: adjacent sequences that share an
  // adapter make one segment; base rows make none.
  std::vector<AdapterSegment> segments;

  // `in_place_prompt_positions`: ModelOptions::in_place_prompt_positions.
  static StepLayout Build(const ForwardBatch& batch, int64_t block_size, c10::Device device,
                          int64_t in_place_prompt_positions);
};

// A CPU int64 tensor holding `v` (a copy).
at::Tensor LongTensor(const std::vector<int64_t>& v);

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_STEP_LAYOUT_H_
