#include "server/model/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

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
  if (blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("kv cache budget of ", budget_bytes, " bytes is ", blocks,
                                                   " blocks, more than block ids can number (2^31 - 1)"));
  }
  auto cache = std::unique_ptr<KvCache>(new KvCache());
  // The tensors first: a budget the device cannot hold fails here, with
  // LibTorch's out-of-memory message, before any bookkeeping is sized.
  absl::Status st = TorchCall(absl::StrCat("allocating the kv cache's ", budget_bytes, " bytes"), [&] {
    auto opts = at::TensorOptions().dtype(dtype).device(device);
    for (int64_t l = 0; l < config.num_layers; ++l) {
      cache->k_.push_back(at::zeros({blocks * block_size, config.num_kv_heads, config.head_dim}, opts));
      cache->v_.push_back(at::zeros({blocks * block_size, config.num_kv_heads, config.head_dim}, opts));
    }
  });
  if (!st.ok()) return st;
  cache->block_size_ = block_size;
  cache->num_blocks_ = blocks;
  cache->free_.reserve(blocks);
  for (int64_t b = blocks - 1; b >= 0; --b) cache->free_.push_back(static_cast<int32_t>(b));
  cache->refs_.assign(static_cast<size_t>(blocks), 0);
  return cache;
}

bool KvCache::Reserve(std::vector<int32_t>& table, int64_t tokens) {
  const int64_t need = BlocksFor(tokens) - static_cast<int64_t>(table.size());
  if (need <= 0) return true;
  if (need > static_cast<int64_t>(free_.size())) return false;
  for (int64_t i = 0; i < need; ++i) table.push_back(*Allocate());
  return true;
}

std::optional<int32_t> KvCache::Allocate() {
  if (free_.empty()) return std::nullopt;
  const int32_t b = free_.back();
  free_.pop_back();
  refs_[b] = 1;
  return b;
}

void KvCache::Share(int32_t block) { ++refs_[block]; }

void KvCache::Release(int32_t block) {
  if (--refs_[block] == 0) free_.push_back(block);
}

void KvCache::Free(std::vector<int32_t>& table) {
  for (int32_t b : table) Release(b);
  table.clear();
}

bool KvCache::MakeWritable(std::vector<int32_t>& table, int64_t from, int64_t to) {
  if (to <= from) return true;
  const int64_t first = from / block_size_;
  const int64_t last = std::min<int64_t>((to - 1) / block_size_, static_cast<int64_t>(table.size()) - 1);
  int64_t shared = 0;
  for (int64_t i = first; i <= last; ++i) shared += refs_[table[i]] > 1 ? 1 : 0;
  if (shared > static_cast<int64_t>(free_.size())) return false;
  for (int64_t i = first; i <= last; ++i) {
    const int32_t old = table[i];
    if (refs_[old] <= 1) continue;
    const int32_t fresh = *Allocate();
    for (size_t l = 0; l < k_.size(); ++l) {
      k_[l].narrow(0, int64_t{fresh} * block_size_, block_size_)
          .copy_(k_[l].narrow(0, int64_t{old} * block_size_, block_size_));
      v_[l].narrow(0, int64_t{fresh} * block_size_, block_size_)
          .copy_(v_[l].narrow(0, int64_t{old} * block_size_, block_size_));
    }
    Release(old);
    table[i] = fresh;
    ++copies_;
  }
  return true;
}

void KvCache::Write(const std::vector<int32_t>& table, int64_t start, const at::Tensor& k, const at::Tensor& v) {
  const int64_t n = k.size(1);
  std::vector<int64_t> slots;
  slots.reserve(static_cast<size_t>(n));
  for (int64_t p = start; p < start + n; ++p) {
    slots.push_back(int64_t{table[p / block_size_]} * block_size_ + p % block_size_);
  }
  at::Tensor index = at::tensor(at::ArrayRef<int64_t>(slots), at::TensorOptions().dtype(at::kLong))
                         .to(k_[0].device());
  for (size_t l = 0; l < k_.size(); ++l) {
    const int64_t li = static_cast<int64_t>(l);
    k_[l].index_copy_(0, index, k.select(0, li).to(k_[l].options()));
    v_[l].index_copy_(0, index, v.select(0, li).to(v_[l].options()));
  }
}

}  // namespace adapterd::model
