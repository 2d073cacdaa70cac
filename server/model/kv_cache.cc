#include "server/model/kv_cache.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "server/common/torch_call.h"

namespace adapterd::model {

int64_t KvCache::BytesPerBlock(const ModelConfig& config, int64_t block_size,
                               c10::ScalarType dtype) {
  return 2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim *
         static_cast<int64_t>(c10::elementSize(dtype));
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const ModelConfig& config,
                                                         int64_t block_size, int64_t budget_bytes,
                                                         c10::ScalarType dtype,
                                                         c10::Device device) {
  if (block_size <= 0) return absl::InvalidArgumentError("kv block size must be positive");
  const int64_t per_block = BytesPerBlock(config, block_size, dtype);
  const int64_t blocks = budget_bytes / per_block;
  if (blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv cache budget of ", budget_bytes, " bytes is below one block (", per_block,
        " bytes for block size ", block_size, ")"));
  }
  auto cache = std::unique_ptr<KvCache>(new KvCache());
  cache->block_size_ = block_size;
  cache->num_blocks_ = blocks;
  cache->free_.reserve(blocks);
  for (int64_t b = blocks - 1; b >= 0; --b) cache->free_.push_back(static_cast<int32_t>(b));
  absl::Status st = TorchCall("allocating the kv cache", [&] {
    auto opts = at::TensorOptions().dtype(dtype).device(device);
    for (int64_t l = 0; l < config.num_layers; ++l) {
      cache->k_.push_back(at::zeros({blocks * block_size, config.num_kv_heads, config.head_dim}, opts));
      cache->v_.push_back(at::zeros({blocks * block_size, config.num_kv_heads, config.head_dim}, opts));
    }
  });
  if (!st.ok()) return st;
  return cache;
}

bool KvCache::Reserve(std::vector<int32_t>& table, int64_t tokens) {
  const int64_t need = BlocksFor(tokens) - static_cast<int64_t>(table.size());
  if (need <= 0) return true;
  if (need > static_cast<int64_t>(free_.size())) return false;
  for (int64_t i = 0; i < need; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KvCache::Free(std::vector<int32_t>& table) {
  for (int32_t b : table) free_.push_back(b);
  table.clear();
}

}  // namespace adapterd::model
