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

}  // namespace

StepLayout StepLayout::Build(const ForwardBatch& batch, int64_t block_size, c10::Device device) {
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
    if (s.num_tokens == 1) {
      l.decode_rows.push_back({s.block_table, s.context_len + 1, offset});
      l.read_slots.emplace_back();  // a decode row: attended with all the others
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
