#include "server/engine/block_manager.h"

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <utility>

namespace adapterd::engine {

BlockManager::BlockManager(model::KvCache* kv, bool prefix_caching) : kv_(kv), prefix_caching_(prefix_caching) {}

void BlockManager::Track(const model::AdapterWeights* adapter) {
  if (adapter == nullptr) return;
  auto [it, inserted] = adapters_.try_emplace(adapter->instance_id());
  if (inserted) it->second.weights = adapter->weak_from_this();
}

const BlockManager::Prefix* BlockManager::PrefixOf(const model::AdapterWeights& adapter) {
  Track(&adapter);
  Tracked& t = adapters_[adapter.instance_id()];
  if (t.prefix.has_value()) {
    t.prefix->last_used = ++tick_;
    return &*t.prefix;
  }
  Prefix p;
  if (!Reserve(p.blocks, adapter.num_prefix_tokens())) return nullptr;
  const at::Tensor& kv = adapter.prefix_kv();  // [layers, 2, n, kv heads, head_dim]
  kv_->Write(p.blocks, 0, kv.select(1, 0), kv.select(1, 1));
  p.last_used = ++tick_;
  t.prefix = std::move(p);
  return &*t.prefix;
}

std::optional<int64_t> BlockManager::Begin(const model::AdapterWeights* adapter, std::span<const int64_t> tokens,
                                           std::vector<int32_t>& table, CacheCursor& cursor) {
  const int64_t bs = kv_->block_size();
  int64_t covered = 0;
  const int64_t prefix = adapter != nullptr ? adapter->num_prefix_tokens() : 0;
  if (prefix > 0) {
    const Prefix* p = PrefixOf(*adapter);
    if (p == nullptr) return std::nullopt;
    for (int32_t b : p->blocks) {
      kv_->Share(b);
      table.push_back(b);
    }
    covered = prefix;
  }
  // The chain starts at the first block that is not wholly the prefix.
  cursor = CacheCursor{prefix / bs, 0};
  if (!prefix_caching_) return covered;
  const int64_t n = static_cast<int64_t>(tokens.size());
  queried_tokens_ += n - covered;
  Track(adapter);
  const uint64_t id = KeyOf(adapter);
  std::vector<std::pair<int64_t, uint64_t>> hits;  // block index, serial
  for (int64_t i = cursor.next_block; (i + 1) * bs <= n; ++i) {
    Key key{id, cursor.parent, std::vector<int64_t>(tokens.begin() + i * bs, tokens.begin() + (i + 1) * bs)};
    auto it = entries_.find(key);
    if (it == entries_.end()) break;
    it->second.last_used = ++tick_;
    const int32_t b = it->second.block;
    kv_->Share(b);
    if (i < static_cast<int64_t>(table.size())) {  // the prefix's partial last block
      kv_->Release(table[i]);
      table[i] = b;
    } else {
      table.push_back(b);
    }
    cursor = CacheCursor{i + 1, it->second.serial};
  }
  // At least the last token is computed, for its logits.
  const int64_t matched = std::min(cursor.next_block * bs, n - 1);
  if (matched > covered) {
    hit_tokens_ += matched - covered;
    covered = matched;
  }
  return covered;
}

void BlockManager::Commit(const model::AdapterWeights* adapter, std::span<const int64_t> tokens, int64_t computed,
                          const std::vector<int32_t>& table, CacheCursor& cursor) {
  if (!prefix_caching_) return;
  const int64_t bs = kv_->block_size();
  const uint64_t id = KeyOf(adapter);
  for (int64_t i = cursor.next_block; (i + 1) * bs <= computed; ++i) {
    Key key{id, cursor.parent, std::vector<int64_t>(tokens.begin() + i * bs, tokens.begin() + (i + 1) * bs)};
    auto [it, inserted] = entries_.try_emplace(std::move(key), Entry{table[i], next_serial_, ++tick_});
    if (inserted) {
      ++next_serial_;
      kv_->Share(table[i]);
    }
    // Where another sequence registered the same block first, this one's
    // copy stays private and the chain goes on from the registered entry.
    cursor = CacheCursor{i + 1, it->second.serial};
  }
}

bool BlockManager::Reserve(std::vector<int32_t>& table, int64_t tokens) {
  if (kv_->Reserve(table, tokens)) return true;
  Reclaim(kv_->BlocksFor(tokens) - static_cast<int64_t>(table.size()) - kv_->free_blocks());
  return kv_->Reserve(table, tokens);
}

bool BlockManager::MakeWritable(std::vector<int32_t>& table, int64_t from, int64_t to) {
  if (kv_->MakeWritable(table, from, to)) return true;
  Reclaim(kv_->BlocksFor(to) - kv_->BlocksFor(from) + 1);
  return kv_->MakeWritable(table, from, to);
}

void BlockManager::Reclaim(int64_t need) {
  if (need <= 0) return;
  // Idle holders: cache entries and prefixes whose blocks only they hold.
  struct Idle {
    uint64_t last_used;
    const Key* key;        // a cache entry, or
    Tracked* adapter;      // an adapter's prefix
  };
  std::vector<Idle> idle;
  for (auto& [key, e] : entries_) {
    if (kv_->ref_count(e.block) == 1) idle.push_back({e.last_used, &key, nullptr});
  }
  for (auto& [id, t] : adapters_) {
    if (!t.prefix.has_value()) continue;
    const bool unused = std::all_of(t.prefix->blocks.begin(), t.prefix->blocks.end(),
                                    [&](int32_t b) { return kv_->ref_count(b) == 1; });
    if (unused) idle.push_back({t.prefix->last_used, nullptr, &t});
  }
  std::sort(idle.begin(), idle.end(), [](const Idle& a, const Idle& b) { return a.last_used < b.last_used; });
  std::vector<Key> evicted;
  for (const Idle& i : idle) {
    if (need <= 0) break;
    if (i.key != nullptr) {
      kv_->Release(entries_.at(*i.key).block);
      evicted.push_back(*i.key);
      --need;
    } else {
      need -= static_cast<int64_t>(i.adapter->prefix->blocks.size());
      kv_->Free(i.adapter->prefix->blocks);
      i.adapter->prefix.reset();
    }
  }
  for (const Key& k : evicted) entries_.erase(k);
}

void BlockManager::DropExpired() {
  for (auto it = adapters_.begin(); it != adapters_.end();) {
    if (!it->second.weights.expired()) {
      ++it;
      continue;
    }
    const uint64_t id = it->first;
    if (it->second.prefix.has_value()) kv_->Free(it->second.prefix->blocks);
    absl::erase_if(entries_, [&](const auto& kv) {
      if (kv.first.adapter != id) return false;
      kv_->Release(kv.second.block);
      return true;
    });
    adapters_.erase(it++);
  }
}

int64_t BlockManager::idle_blocks() const {
  int64_t idle = 0;
  for (const auto& [key, e] : entries_) idle += kv_->ref_count(e.block) == 1 ? 1 : 0;
  for (const auto& [id, t] : adapters_) {
    if (!t.prefix.has_value()) continue;
    for (int32_t b : t.prefix->blocks) idle += kv_->ref_count(b) == 1 ? 1 : 0;
  }
  return idle;
}

double BlockManager::utilization() const {
  const int64_t total = kv_->num_blocks();
  if (total == 0) return 0.0;
  return static_cast<double>(total - kv_->free_blocks() - idle_blocks()) / static_cast<double>(total);
}

}  // namespace adapterd::engine
