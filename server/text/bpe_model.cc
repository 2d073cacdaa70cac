#include "server/text/bpe_model.h"

#include <queue>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "server/text/unicode_util.h"

namespace adapterd::text {

// Debian builds Abseil with its own string_view type, which heterogeneous
// lookup in its string-keyed maps needs.
inline absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Ids of recently seen pieces, sharded to keep lock contention low. Stops
// accepting new entries once full, as tokenizers' cache does.
class BpeWordCache {
 public:
  static constexpr size_t kShards = 16;
  static constexpr size_t kMaxEntriesPerShard = 8192;
  static constexpr size_t kMaxPieceBytes = 256;

  bool Get(std::string_view piece, std::vector<int32_t>* ids) {
    Shard& s = ShardFor(piece);
    absl::MutexLock lock(&s.mu);
    auto it = s.map.find(AsAbsl(piece));
    if (it == s.map.end()) return false;
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    return true;
  }
  void Put(std::string_view piece, const int32_t* ids, size_t n) {
    if (piece.size() > kMaxPieceBytes) return;
    Shard& s = ShardFor(piece);
    absl::MutexLock lock(&s.mu);
    if (s.map.size() >= kMaxEntriesPerShard) return;
    s.map.try_emplace(std::string(piece), ids, ids + n);
  }

 private:
  struct Shard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> map ABSL_GUARDED_BY(mu);
  };
  Shard& ShardFor(std::string_view piece) { return shards_[absl::HashOf(piece) % kShards]; }
  Shard shards_[kShards];
};

namespace {

struct Symbol {
  int32_t id;
  int32_t prev, next;
  bool alive;
};

struct QueuedMerge {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  bool operator<(const QueuedMerge& o) const {  // the lowest rank, then position, on top
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

}  // namespace

BpeModel::BpeModel() : cache_(std::make_unique<BpeWordCache>()) { byte_ids_.fill(-1); }
BpeModel::~BpeModel() = default;

absl::Status BpeModel::ParseVocab(const Json& j, const std::string& path) {
  const Json* vocab = JsonMember(j, "vocab");
  const std::string vpath = JsonChild(path, "vocab");
  if (vocab == nullptr) return JsonError(vpath, "is missing");
  if (!vocab->is_object()) return JsonError(vpath, "must be an object of token to id");
  vocab_.reserve(vocab->size());
  int64_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > INT32_MAX - 1 ||
        (it->is_number_unsigned() && it->get<uint64_t>() > INT32_MAX)) {
      return JsonError(JsonChild(vpath, it.key()), absl::StrCat("must be an id in [0, 2^31-1), not ", it->dump()));
    }
    vocab_[it.key()] = static_cast<int32_t>(it->get<int64_t>());
    max_id = std::max<int64_t>(max_id, it->get<int64_t>());
  }
  if (max_id >= (int64_t{1} << 22)) return JsonError(vpath, absl::StrCat("has an id too large (", max_id, ")"));
  // vocab_ takes no more insertions, so pointers to its keys stay valid.
  id_to_token_.assign(static_cast<size_t>(max_id + 1), nullptr);
  for (const auto& [token, id] : vocab_) id_to_token_[id] = &token;
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(absl::StrFormat("<0x%02X>", b));
    if (it != vocab_.end()) byte_ids_[b] = it->second;
  }
  return absl::OkStatus();
}

absl::Status BpeModel::ParseMerges(const Json& j, const std::string& path) {
  const std::string mpath = JsonChild(path, "merges");
  const Json* merges = JsonMember(j, "merges");
  if (merges == nullptr) return absl::OkStatus();
  if (!merges->is_array()) return JsonError(mpath, "must be an array");
  merges_.reserve(merges->size());
  int32_t rank = 0;
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& m = (*merges)[i];
    const std::string p = JsonIndex(mpath, i);
    std::string a, b;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      if (s.rfind("#version", 0) == 0) continue;
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return JsonError(p, absl::StrCat("\"", s, "\" is not two tokens separated by one space"));
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return JsonError(p, absl::StrCat("must be a pair of strings or an \"a b\" string, not ", m.dump()));
    }
    auto ia = vocab_.find(a), ib = vocab_.find(b);
    if (ia == vocab_.end()) return JsonError(p, absl::StrCat("token \"", a, "\" is not in the vocabulary"));
    if (ib == vocab_.end()) return JsonError(p, absl::StrCat("token \"", b, "\" is not in the vocabulary"));
    if (b.size() < prefix_.size()) {
      return JsonError(p, absl::StrCat("token \"", b, "\" is shorter than continuing_subword_prefix"));
    }
    const std::string merged = a + b.substr(prefix_.size());
    auto in = vocab_.find(merged);
    if (in == vocab_.end()) {
      return JsonError(p, absl::StrCat("merged token \"", merged, "\" is not in the vocabulary"));
    }
    merges_[PairKey(ia->second, ib->second)] = MergeTarget{rank++, in->second};
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const Json& j, const std::string& path) {
  if (!j.is_object()) return JsonError(path, "must be an object");
  auto m = std::unique_ptr<BpeModel>(new BpeModel());
  absl::StatusOr<std::optional<double>> dropout = OptionalNumber(j, "dropout", path);
  if (!dropout.ok()) return dropout.status();
  if (dropout->has_value() && **dropout != 0.0) {
    return JsonError(JsonChild(path, "dropout"), absl::StrCat("is ", **dropout, "; only null or 0 is supported"));
  }
  absl::StatusOr<std::optional<std::string>> unk = OptionalString(j, "unk_token", path);
  if (!unk.ok()) return unk.status();
  m->unk_token_ = *unk;
  absl::StatusOr<std::optional<std::string>> prefix = OptionalString(j, "continuing_subword_prefix", path);
  if (!prefix.ok()) return prefix.status();
  m->prefix_ = prefix->value_or("");
  absl::StatusOr<std::optional<std::string>> suffix = OptionalString(j, "end_of_word_suffix", path);
  if (!suffix.ok()) return suffix.status();
  m->suffix_ = suffix->value_or("");
  for (auto [key, dst] : {std::pair{"fuse_unk", &m->fuse_unk_}, std::pair{"byte_fallback", &m->byte_fallback_},
                          std::pair{"ignore_merges", &m->ignore_merges_}}) {
    absl::StatusOr<std::optional<bool>> v = OptionalBool(j, key, path);
    if (!v.ok()) return v.status();
    *dst = v->value_or(false);
  }
  if (absl::Status s = m->ParseVocab(j, path); !s.ok()) return s;
  if (absl::Status s = m->ParseMerges(j, path); !s.ok()) return s;
  return m;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(AsAbsl(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return nullptr;
  return id_to_token_[id];
}

void BpeModel::ApplyMerges(std::vector<int32_t>* ids) const {
  const int32_t n = static_cast<int32_t>(ids->size());
  if (n < 2) return;
  std::vector<Symbol> sym(n);
  for (int32_t i = 0; i < n; ++i) sym[i] = {(*ids)[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  std::vector<QueuedMerge> heap_storage;
  heap_storage.reserve(n);
  std::priority_queue<QueuedMerge> queue(std::less<QueuedMerge>(), std::move(heap_storage));
  auto push_pair = [&](int32_t pos) {
    const int32_t next = sym[pos].next;
    if (next < 0) return;
    auto it = merges_.find(PairKey(sym[pos].id, sym[next].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!queue.empty()) {
    const QueuedMerge top = queue.top();
    queue.pop();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[left.next];
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  ids->clear();
  for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next) ids->push_back(sym[i].id);
}

absl::Status BpeModel::MergeWord(std::string_view piece, std::vector<int32_t>* ids) const {
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  std::optional<int32_t> pending_unk;
  std::string key;
  size_t pos = 0;
  while (pos < piece.size()) {
    const size_t start = pos;
    pos += std::min(Utf8SequenceLength(static_cast<unsigned char>(piece[pos])), piece.size() - pos);
    std::string_view ch = piece.substr(start, pos - start);
    if (start > 0 || pos == piece.size()) {
      key.assign(start > 0 ? prefix_ : std::string());
      key.append(ch);
      if (pos == piece.size()) key.append(suffix_);
      ch = key;
    }
    if (auto it = vocab_.find(AsAbsl(ch)); it != vocab_.end()) {
      if (pending_unk) symbols.push_back(*std::exchange(pending_unk, std::nullopt));
      symbols.push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all &= byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        if (pending_unk) symbols.push_back(*std::exchange(pending_unk, std::nullopt));
        for (char c : ch) symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (!unk_token_) continue;  // no unknown token: the character is dropped
    auto unk = vocab_.find(*unk_token_);
    if (unk == vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.unk_token \"", *unk_token_, "\" is not in the vocabulary"));
    }
    if (pending_unk && !fuse_unk_) symbols.push_back(*pending_unk);
    pending_unk = unk->second;
  }
  if (pending_unk) symbols.push_back(*pending_unk);
  ApplyMerges(&symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
  return absl::OkStatus();
}

absl::Status BpeModel::Tokenize(std::string_view piece, std::vector<int32_t>* ids) const {
  if (piece.empty()) return absl::OkStatus();
  if (ignore_merges_) {
    if (auto it = vocab_.find(AsAbsl(piece)); it != vocab_.end()) {
      ids->push_back(it->second);
      return absl::OkStatus();
    }
  }
  if (cache_->Get(piece, ids)) return absl::OkStatus();
  const size_t before = ids->size();
  if (absl::Status s = MergeWord(piece, ids); !s.ok()) return s;
  cache_->Put(piece, ids->data() + before, ids->size() - before);
  return absl::OkStatus();
}

}  // namespace adapterd::text
