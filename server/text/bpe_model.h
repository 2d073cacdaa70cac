// The BPE `model` of tokenizer.json.
#ifndef ADAPTERD_SERVER_TEXT_BPE_MODEL_H_
#define ADAPTERD_SERVER_TEXT_BPE_MODEL_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/text/json_fields.h"

namespace adapterd::text {

class BpeWordCache;

// Byte-pair encoding with tokenizers' semantics: `vocab`, `merges` (pairs or
// legacy "a b" strings, ranked by position), `unk_token`, `fuse_unk`,
// `byte_fallback`, `continuing_subword_prefix`, `end_of_word_suffix` and
// `ignore_merges`. Merging is rank-ordered over a linked list of symbols
// with a priority queue; the ids of short pieces are cached.
//
// A BpeModel is immutable once built and thread-safe (the cache is
// internally synchronized).
class BpeModel {
 public:
  // Parses the model object at `path`. A non-zero `dropout`, a merge of
  // tokens not in the vocabulary and malformed fields are INVALID_ARGUMENT
  // naming the path.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const Json& j, const std::string& path);
  ~BpeModel();

  // Appends the ids of one pre-tokenized piece. INVALID_ARGUMENT when a
  // character needs the unknown token and the vocabulary lacks it.
  absl::Status Tokenize(std::string_view piece, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token of `id`, or nullptr when no token has that id.
  const std::string* IdToToken(int32_t id) const;
  // One more than the largest id (at most 2^22).
  int64_t size() const { return static_cast<int64_t>(id_to_token_.size()); }

 private:
  struct MergeTarget {
    int32_t rank;
    int32_t id;
  };
  BpeModel();
  absl::Status ParseVocab(const Json& j, const std::string& path);
  absl::Status ParseMerges(const Json& j, const std::string& path);
  absl::Status MergeWord(std::string_view piece, std::vector<int32_t>* ids) const;
  void ApplyMerges(std::vector<int32_t>* symbols) const;
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<const std::string*> id_to_token_;  // keys of vocab_, null for unused ids
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;
  std::optional<std::string> unk_token_;
  std::string prefix_, suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_;  // <0xXX> tokens, -1 when absent
  std::unique_ptr<BpeWordCache> cache_;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_BPE_MODEL_H_
