// Paged key/value cache: a preallocated pool of fixed-size blocks per layer.
#ifndef ADAPTERD_SERVER_MODEL_KV_CACHE_H_
#define ADAPTERD_SERVER_MODEL_KV_CACHE_H_

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/model_config.h"

namespace adapterd::model {

// The pool holds, for every layer, K and V tensors of shape
// [num_blocks * block_size, num_kv_heads, head_dim]; token slot
// `block * block_size + offset` holds one position of one sequence. Sequences
// own blocks through block tables (see SequenceKv) and give them back with
// Free(). The pool is sized once, from a byte budget, and never grows.
// Not thread-safe: it belongs to the engine thread.
class KvCache {
 public:
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const ModelConfig& config,
                                                         int64_t block_size, int64_t budget_bytes,
                                                         c10::ScalarType dtype, c10::Device device);
  static int64_t BytesPerBlock(const ModelConfig& config, int64_t block_size,
                               c10::ScalarType dtype);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  double utilization() const {
    return num_blocks_ == 0 ? 0.0 : 1.0 - static_cast<double>(free_.size()) / num_blocks_;
  }
  int64_t BlocksFor(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // Grows `table` until it covers `tokens` positions. Returns false, changing
  // nothing, when the pool has too few free blocks.
  bool Reserve(std::vector<int32_t>& table, int64_t tokens);
  // Returns every block of `table` to the pool and clears it.
  void Free(std::vector<int32_t>& table);

  at::Tensor& k(int64_t layer) { return k_[layer]; }
  at::Tensor& v(int64_t layer) { return v_[layer]; }

 private:
  KvCache() = default;
  int64_t block_size_ = 0;
  int64_t num_blocks_ = 0;
  std::vector<int32_t> free_;
  std::vector<at::Tensor> k_, v_;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_KV_CACHE_H_
