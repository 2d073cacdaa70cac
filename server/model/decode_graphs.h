// Decode steps of fixed shapes, per batch bucket, replayed from CUDA graphs.
#ifndef ADAPTERD_SERVER_MODEL_DECODE_GRAPHS_H_
#define ADAPTERD_SERVER_MODEL_DECODE_GRAPHS_H_

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <tuple>

#include "server/gpu/step_graph.h"
#include "server/model/delta_backend.h"
#include "server/model/kv_cache.h"
#include "server/model/llama_model.h"

namespace adapterd::model {

// The inputs of a decode step of fixed shape: tensors on the model's device
// whose addresses stay the same for as long as their bucket lives.
struct FixedDecodeInputs {
  int64_t rows = 0;     // B, the bucket's rows
  int64_t context = 0;  // C, cache slots each row's attention reads
  at::Tensor ids, positions, write_slots, lengths;  // [B] int64
  at::Tensor read_slots;                             // [B * C] int64; a row's slots past its length are masked
  const DeltaTables* tables = nullptr;               // null: every row through the base
};

// Runs the model over FixedDecodeInputs: writes each row's keys and values
// into the cache and returns float32 logits [B, vocab]. It must enqueue the
// same device work whatever the inputs hold (no host reads of them).
using FixedDecodeBody = std::function<at::Tensor(const FixedDecodeInputs&, KvCache&)>;

// DecodeGraphs runs the steps whose every row is one decoded token
// (Takes()) at fixed shapes: the rows padded to a batch bucket (a power of
// two up to kMaxRows) by repeating the last row, which writes the same key
// and value to the same cache slot, and the attention's context padded to
// a power of two of at least kMinContext slots. Each (rows, context,
// adapters or not) bucket gets input buffers and adapter tables
// (DeltaTables) of its own, allocated once and written before each step,
// so the tables are inputs: a step whose adapters change needs no new
// capture.
//
// In mode kGraphs the first step of a bucket runs eagerly and is then
// captured (gpu::CaptureStepGraph); later steps only write the inputs and
// replay. A capture that fails is logged once and the bucket stays eager.
// All graphs share the first one's memory pool, so their temporaries take
// the memory of the largest step, not of every bucket together.
// Graphs hold the addresses of one KvCache; a step with another cache
// drops them all. In mode kBuckets the same fixed-shape step runs eagerly
// every time (the graphs' step without the capture: how the CPU tests it).
//
// Adapters are taken when the backend's tables carry all they do (plain
// LoRA the kernels read) and they change no embedding, head or prompt.
// Owned by the model; used only from its forward thread.
class DecodeGraphs {
 public:
  static constexpr int64_t kMaxRows = 256;
  static constexpr int64_t kMinContext = 64;

  // `mode` is kBuckets or kGraphs; `backend` (the model's) outlives this.
  DecodeGraphs(DecodeSteps mode, const DeltaBackend& backend, int64_t num_layers, c10::Device device,
               at::ScalarType dtype, FixedDecodeBody body);
  ~DecodeGraphs();

  // Whether `batch` takes the fixed-shape path.
  bool Takes(const ForwardBatch& batch) const;
  // Runs a batch that Takes(): float32 logits [rows, vocab]. Throws on
  // device errors (called inside the forward's TorchCall).
  at::Tensor Run(const ForwardBatch& batch, KvCache& kv);

  static int64_t RowBucket(int64_t rows);
  static int64_t ContextBucket(int64_t longest);

  struct Stats {
    int64_t buckets = 0;   // buckets made (input buffers and tables)
    int64_t captures = 0;  // graphs captured
    int64_t replays = 0;   // steps replayed from a graph
    int64_t eager = 0;     // fixed-shape steps run eagerly
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Bucket;
  Bucket& GetBucket(int64_t rows, int64_t context, bool adapters);
  // Writes the step's inputs into `b`'s buffers.
  void WriteInputs(const ForwardBatch& batch, int64_t block_size, Bucket& b);

  DecodeSteps mode_;
  const DeltaBackend& backend_;
  int64_t num_layers_;
  c10::Device device_;
  at::ScalarType dtype_;
  FixedDecodeBody body_;
  std::unique_ptr<DeltaTables> probe_;  // one row: what Takes() asks
  std::map<std::tuple<int64_t, int64_t, bool>, std::unique_ptr<Bucket>> buckets_;
  const void* cache_ = nullptr;  // the KvCache the graphs write (its first key tensor)
  const gpu::StepGraph* first_graph_ = nullptr;  // whose memory pool every graph shares
  bool capture_failure_logged_ = false;
  Stats stats_;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_DECODE_GRAPHS_H_
