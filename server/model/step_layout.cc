#include "server/model/step_layout.h"

#include <ATen/ATen.h>

namespace adapterd::model {

at::Tensor LongTensor(const std::vector<int64_t>& v) {
  return at::tensor(at::ArrayRef<int64_t>(v), at::TensorOptions().dtype(at::kLong));
}

namespace {

std::vector<AdapterSegment> Segments(const ForwardBatch& batch) {
  std::vector<AdapterSegment> segments;
  if (batch.adapters.empty()) return segments;
  int64_t row = 0;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    const AdapterWeights* a = batch.adapters[i];
    if (a != nullptr) {
      if (!segments.empty() && segments.back().adapter == a && segments.back().start + segments.back().rows == row) {
        segments.back().rows += batch.seqs[i].num_tokens;
      } else {
        segments.push_back({row, batch.seqs[i].num_tokens, a});
      }
    }
    row += batch.seqs[i].num_tokens;
  }
  return segments;
}

// Whether a prompt chunk attends in place, each of its tokens as a decode
// row whose context ends at that token (the causal mask, bottom-right
// aligned after cached context), rather than through SDPA over its
// gathered context. In place, the chunk reads n * context + n * (n + 1) / 2
// positions of keys and values, against SDPA's one gather of context + n
// and its fixed cost per call, so in place wins for short chunks (a
// 16-token prompt reads 136 positions). On the CPU only, where the paged
// kernel runs.
bool AttendsInPlace(const SequenceChunk& s, c10::Device device, int64_t max_positions) {
  const int64_t n = s.num_tokens;
  return device.is_cpu() && n * s.context_len + n * (n + 1) / 2 <= max_positions;
}

}  // namespace

StepLayout StepLayout::Build(const ForwardBatch& batch, int64_t block_size, c10::Device device,
                             int64_t in_place_prompt_positions) {
  StepLayout l;
  const int64_t bs = block_size;
  l.positions.reserve(batch.token_ids.size());
  l.write_slots.reserve(batch.token_ids.size());
  int64_t offset = 0;
  for (const SequenceChunk& s : batch.seqs) {
    const std::vector<int32_t>& table = *s.block_table;
    auto slot = [&](int64_t p) { return static_cast<int64_t>(table[p / bs]) * bs + p % bs; };
    for (int64_t i = 0; i < s.num_tokens; ++i) {
      l.positions.push_back(s.context_len + i);
      l.write_slots.push_back(slot(s.context_len + i));
    }
    if (s.num_tokens == 1 || AttendsInPlace(s, device, in_place_prompt_positions)) {
      for (int64_t i = 0; i < s.num_tokens; ++i) {
        l.decode_rows.push_back({s.block_table, s.context_len + i + 1, offset + i});
      }
      l.read_slots.emplace_back();  // attended with the decode rows
      l.masks.emplace_back();
    } else {
      std::vector<int64_t> ctx_slots;
      ctx_slots.reserve(s.context_len + s.num_tokens);
      for (int64_t p = 0; p < s.context_len + s.num_tokens; ++p) ctx_slots.push_back(slot(p));
      l.read_slots.push_back(LongTensor(ctx_slots).to(device));
      std::optional<at::Tensor> mask;
      if (s.context_len > 0) {
        const auto longs = at::TensorOptions().device(device).dtype(at::kLong);
        at::Tensor q_pos = at::arange(s.num_tokens, longs).unsqueeze(1) + s.context_len;
        at::Tensor k_pos = at::arange(s.context_len + s.num_tokens, longs).unsqueeze(0);
        mask = k_pos <= q_pos;
      }
      l.masks.push_back(std::move(mask));
    }
    offset += s.num_tokens;
    if (s.wants_logits) {
      l.logit_rows.push_back(offset - 1);
      const size_t i = l.read_slots.size() - 1;
      l.heads.push_back({batch.adapters.empty() ? nullptr : batch.adapters[i], s.classify});
    }
  }
  l.segments = Segments(batch);
  return l;
}

}  // namespace adapterd::model
