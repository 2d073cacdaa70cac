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
// `block * block_size + offset` holds one position. Sequences hold blocks
// through block tables (vectors of block ids) and give them back with Free().
//
// Blocks are reference-counted: one block may sit in many tables (an
// adapter's prefix-tuning prefix, a cached prompt prefix) and is read-only
// while it does. A holder that must write into a shared block calls
// MakeWritable() first, which gives it a private copy (copy-on-write). A
// block returns to the free list when its last holder releases it, so a
// shared block counts once in utilization(). The pool is sized once, from a
// byte budget, and never grows. Not thread-safe: it belongs to the engine
// thread.
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

  // Grows `table` with new private blocks until it covers `tokens`
  // positions. Returns false, changing nothing, when the pool has too few
  // free blocks.
  bool Reserve(std::vector<int32_t>& table, int64_t tokens);
  // Takes one new private block (reference count 1), or nullopt when none is free.
  std::optional<int32_t> Allocate();
  // Adds a holder to a block in use.
  void Share(int32_t block);
  // Drops one holder; the last one returns the block to the pool.
  void Release(int32_t block);
  // Releases every block of `table` and clears it.
  void Free(std::vector<int32_t>& table);
  int32_t ref_count(int32_t block) const { return refs_[block]; }
  // Makes the blocks of `table` that hold positions [from, to) private,
  // copying each shared one into a new block (all layers) and releasing the
  // shared one. Returns false, changing nothing, when too few blocks are free.
  bool MakeWritable(std::vector<int32_t>& table, int64_t from, int64_t to);
  // Copy-on-write copies made so far.
  int64_t copies() const { return copies_; }
  // Writes positions [start, start + n) of `table` in every layer from
  // `k` and `v`, shaped [num_layers, n, num_kv_heads, head_dim].
  void Write(const std::vector<int32_t>& table, int64_t start, const at::Tensor& k, const at::Tensor& v);

  at::Tensor& k(int64_t layer) { return k_[layer]; }
  at::Tensor& v(int64_t layer) { return v_[layer]; }

 private:
  KvCache() = default;
  int64_t block_size_ = 0;
  int64_t num_blocks_ = 0;
  std::vector<int32_t> free_;
  std::vector<int32_t> refs_;  // holders per block; 0 = free
  int64_t copies_ = 0;
  std::vector<at::Tensor> k_, v_;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_KV_CACHE_H_
