#include "server/model/decode_graphs.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <bit>
#include <utility>
#include <vector>

#include "absl/log/log.h"

namespace adapterd::model {

struct DecodeGraphs::Bucket {
  at::Tensor buffer;  // int64 [B * (4 + C)]: ids, positions, write slots, lengths, read slots
  std::unique_ptr<DeltaTables> tables;
  FixedDecodeInputs inputs;
  std::unique_ptr<gpu::StepGraph> graph;
  at::Tensor out;  // the captured step's logits, rewritten by each replay
  bool eager_only = false;
};

DecodeGraphs::DecodeGraphs(DecodeSteps mode, const DeltaBackend& backend, int64_t num_layers, c10::Device device,
                           at::ScalarType dtype, FixedDecodeBody body)
    : mode_(mode),
      backend_(backend),
      num_layers_(num_layers),
      device_(device),
      dtype_(dtype),
      body_(std::move(body)),
      probe_(backend.MakeTables(1, num_layers, device, dtype)) {}

DecodeGraphs::~DecodeGraphs() = default;

int64_t DecodeGraphs::RowBucket(int64_t rows) { return static_cast<int64_t>(std::bit_ceil(static_cast<uint64_t>(rows))); }

int64_t DecodeGraphs::ContextBucket(int64_t longest) {
  return std::max(kMinContext, static_cast<int64_t>(std::bit_ceil(static_cast<uint64_t>(std::max<int64_t>(longest, 1)))));
}

bool DecodeGraphs::Takes(const ForwardBatch& batch) const {
  if (batch.seqs.empty() || static_cast<int64_t>(batch.seqs.size()) > kMaxRows || batch.profile != nullptr) {
    return false;
  }
  for (const SequenceChunk& s : batch.seqs) {
    if (s.num_tokens != 1 || !s.wants_logits || s.classify) return false;
  }
  for (const AdapterWeights* a : batch.adapters) {
    if (a == nullptr) continue;
    if (probe_ == nullptr || a->kind() != AdapterKind::kLora || a->ChangesEmbedding() || a->lm_head().defined() ||
        !a->head_token_rows().empty() || a->is_classifier() || a->prompt().defined() ||
        a->num_prefix_tokens() > 0 || !probe_->Takes(*a)) {
      return false;
    }
  }
  return true;
}

DecodeGraphs::Bucket& DecodeGraphs::GetBucket(int64_t rows, int64_t context, bool adapters) {
  std::unique_ptr<Bucket>& slot = buckets_[{rows, context, adapters}];
  if (slot != nullptr) return *slot;
  auto b = std::make_unique<Bucket>();
  b->buffer = at::zeros({rows * (4 + context)}, at::TensorOptions().dtype(at::kLong).device(device_));
  if (adapters) b->tables = backend_.MakeTables(rows, num_layers_, device_, dtype_);
  FixedDecodeInputs& in = b->inputs;
  in.rows = rows;
  in.context = context;
  in.ids = b->buffer.narrow(0, 0, rows);
  in.positions = b->buffer.narrow(0, rows, rows);
  in.write_slots = b->buffer.narrow(0, 2 * rows, rows);
  in.lengths = b->buffer.narrow(0, 3 * rows, rows);
  in.read_slots = b->buffer.narrow(0, 4 * rows, rows * context);
  in.tables = b->tables.get();
  ++stats_.buckets;
  slot = std::move(b);
  return *slot;
}

void DecodeGraphs::WriteInputs(const ForwardBatch& batch, int64_t block_size, Bucket& b) {
  const int64_t B = b.inputs.rows, C = b.inputs.context;
  const int64_t n = static_cast<int64_t>(batch.seqs.size());
  // Written where the step reads it on the CPU; elsewhere in pinned memory,
  // copied once without a synchronisation.
  const at::Tensor staging =
      device_.is_cpu() ? b.buffer : at::empty({B * (4 + C)}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* const host = staging.data_ptr<int64_t>();
  std::fill_n(host, B * (4 + C), 0);
  std::vector<const AdapterWeights*> row_adapters(static_cast<size_t>(B), nullptr);
  for (int64_t r = 0; r < B; ++r) {
    // Rows past the batch repeat its last row.
    const int64_t i = std::min(r, n - 1);
    const SequenceChunk& s = batch.seqs[static_cast<size_t>(i)];
    const std::vector<int32_t>& table = *s.block_table;
    auto slot = [&](int64_t p) { return int64_t{table[static_cast<size_t>(p / block_size)]} * block_size + p % block_size; };
    const int64_t length = s.context_len + 1;
    host[r] = batch.token_ids[static_cast<size_t>(i)];
    host[B + r] = s.context_len;
    host[2 * B + r] = slot(s.context_len);
    host[3 * B + r] = length;
    int64_t* read = host + 4 * B + r * C;
    for (int64_t p = 0; p < length; ++p) read[p] = slot(p);
    if (!batch.adapters.empty()) row_adapters[static_cast<size_t>(r)] = batch.adapters[static_cast<size_t>(i)];
  }
  if (!device_.is_cpu()) b.buffer.copy_(staging, /*non_blocking=*/true);
  if (b.tables != nullptr) b.tables->Fill(row_adapters);
}

at::Tensor DecodeGraphs::Run(const ForwardBatch& batch, KvCache& kv) {
  const int64_t n = static_cast<int64_t>(batch.seqs.size());
  int64_t longest = 0;
  for (const SequenceChunk& s : batch.seqs) longest = std::max(longest, s.context_len + 1);
  const bool adapters =
      std::any_of(batch.adapters.begin(), batch.adapters.end(), [](const AdapterWeights* a) { return a != nullptr; });
  if (kv.k(0).data_ptr() != cache_) {
    first_graph_ = nullptr;
    buckets_.clear();
    cache_ = kv.k(0).data_ptr();
  }
  Bucket& b = GetBucket(RowBucket(n), ContextBucket(longest), adapters);
  WriteInputs(batch, kv.block_size(), b);
  if (b.graph != nullptr) {
    b.graph->Replay();
    ++stats_.replays;
    // A copy: the next replay rewrites the graph's output.
    return b.out.narrow(0, 0, n).clone();
  }
  at::Tensor logits = body_(b.inputs, kv);
  ++stats_.eager;
  if (mode_ == DecodeSteps::kGraphs && !b.eager_only) {
    // Every bucket's graph shares the first one's memory: replays run one
    // at a time, and each one's logits are copied out before the next.
    absl::StatusOr<std::unique_ptr<gpu::StepGraph>> g =
        gpu::CaptureStepGraph(device_, [&] { b.out = body_(b.inputs, kv); }, first_graph_);
    if (g.ok()) {
      b.graph = *std::move(g);
      if (first_graph_ == nullptr) first_graph_ = b.graph.get();
      ++stats_.captures;
    } else {
      b.eager_only = true;
      if (!capture_failure_logged_) LOG(WARNING) << "decode steps run without CUDA graphs: " << g.status();
      capture_failure_logged_ = true;
    }
  }
  return logits.narrow(0, 0, n);
}

}  // namespace adapterd::model
