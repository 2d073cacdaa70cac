// KV blocks as sequences see them: private blocks, an adapter's shared
// prefix-tuning prefix, and the automatic prefix cache.
#ifndef ADAPTERD_SERVER_ENGINE_BLOCK_MANAGER_H_
#define ADAPTERD_SERVER_ENGINE_BLOCK_MANAGER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "server/model/adapter_weights.h"
#include "server/model/kv_cache.h"

namespace adapterd::engine {

// Where a sequence stands in the prefix cache: its blocks before
// `next_block` are in the cache (matched or registered), and `parent` names
// the cache entry of block next_block - 1 (0: the chain's root).
struct CacheCursor {
  int64_t next_block = 0;
  uint64_t parent = 0;
};

// Hands out the paged KV pool's blocks to sequences, and keeps two kinds of
// shared, read-only blocks in it:
//
//  - Prefix tuning. An adapter's per-layer key/value prefix is copied into
//    the pool once, the first time a sequence of the adapter starts, and
//    every sequence of the adapter holds the same blocks at the start of its
//    block table. The last prefix block, when partly filled, is copied on the
//    sequence's first write (KvCache::MakeWritable).
//  - The prefix cache (when enabled). Each full block a sequence has
//    computed is registered under (adapter instance, the entry of the block
//    before it, the block's token ids), so a later sequence of the same
//    adapter (or of the base) whose tokens start with the same full blocks
//    takes them instead of computing them. The key is exact: no hash
//    collision can serve another sequence's keys and values. At least one
//    token is always left to compute; when every block matched, the last one
//    is copied on write.
//
// Both are keyed by AdapterWeights::instance_id, so an adapter's blocks are
// never served through another adapter, or through a later version of the
// same id; DropExpired() frees the blocks of adapters whose weights are gone
// (unloaded, replaced or evicted from memory). A cached block that no
// sequence holds is idle: Reserve() and MakeWritable() take idle blocks back,
// least recently used first, before they report the pool full, and a block
// that a sequence holds is never taken. Idle blocks do not count as used.
//
// Not thread-safe: it belongs to the engine thread, like the pool.
class BlockManager {
 public:
  BlockManager(model::KvCache* kv, bool prefix_caching);

  model::KvCache& kv() { return *kv_; }
  bool prefix_caching() const { return prefix_caching_; }

  // Starts the block table of a sequence that holds nothing yet: the
  // adapter's prefix blocks (prefix tuning), then the cached blocks that its
  // leading full blocks of `tokens` match. Returns the positions this covers
  // (the sequence's tokens already computed), or nullopt, with `table` left
  // empty, when the pool cannot hold the adapter's prefix.
  std::optional<int64_t> Begin(const model::AdapterWeights* adapter, std::span<const int64_t> tokens,
                               std::vector<int32_t>& table, CacheCursor& cursor);
  // After a step: registers the blocks of `table` that `computed` positions
  // now fill completely and that are not in the cache yet.
  void Commit(const model::AdapterWeights* adapter, std::span<const int64_t> tokens, int64_t computed,
              const std::vector<int32_t>& table, CacheCursor& cursor);

  // KvCache::Reserve and MakeWritable, taking idle blocks back first when
  // the pool is short. False, changing nothing, when it stays short.
  bool Reserve(std::vector<int32_t>& table, int64_t tokens);
  bool MakeWritable(std::vector<int32_t>& table, int64_t from, int64_t to);
  // Releases a sequence's blocks; cached ones stay cached.
  void Free(std::vector<int32_t>& table) { kv_->Free(table); }

  // Frees every block kept for adapters whose weights no longer exist.
  void DropExpired();

  // Blocks held by sequences (a shared block once), as a fraction of the pool.
  double utilization() const;
  int64_t idle_blocks() const;
  int64_t cached_blocks() const { return static_cast<int64_t>(entries_.size()); }
  // Prompt positions looked up in the prefix cache, and those found.
  int64_t queried_tokens() const { return queried_tokens_; }
  int64_t hit_tokens() const { return hit_tokens_; }

 private:
  struct Key {
    uint64_t adapter;
    uint64_t parent;
    std::vector<int64_t> tokens;
    bool operator==(const Key&) const = default;
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.adapter, k.parent, k.tokens);
    }
  };
  struct Entry {
    int32_t block;
    uint64_t serial;     // names this entry as a parent; never reused
    uint64_t last_used;  // LRU tick
  };
  // An adapter's prefix-tuning blocks, and what tells that it is gone.
  struct Prefix {
    std::vector<int32_t> blocks;
    uint64_t last_used = 0;
  };
  struct Tracked {
    std::weak_ptr<const model::AdapterWeights> weights;
    std::optional<Prefix> prefix;
  };

  // The adapter's prefix blocks, copied into the pool on first use; null
  // when the pool cannot hold them.
  const Prefix* PrefixOf(const model::AdapterWeights& adapter);
  // Takes back up to `need` idle blocks, least recently used first.
  void Reclaim(int64_t need);
  static uint64_t KeyOf(const model::AdapterWeights* adapter) {
    return adapter == nullptr ? 0 : adapter->instance_id();
  }
  void Track(const model::AdapterWeights* adapter);

  model::KvCache* const kv_;
  const bool prefix_caching_;
  absl::flat_hash_map<Key, Entry> entries_;
  absl::flat_hash_map<uint64_t, Tracked> adapters_;  // by instance id
  uint64_t tick_ = 0;
  uint64_t next_serial_ = 1;
  int64_t queried_tokens_ = 0;
  int64_t hit_tokens_ = 0;
};

}  // namespace adapterd::engine

#endif  // ADAPTERD_SERVER_ENGINE_BLOCK_MANAGER_H_
