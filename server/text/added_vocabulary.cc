#include "server/text/added_vocabulary.h"

#include <bitset>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/text/unicode_util.h"

namespace adapterd::text {

// Debian builds Abseil with its own string_view type, which heterogeneous
// lookup in its string-keyed maps needs.
inline absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A byte trie of token strings, searched leftmost-longest.
class AddedVocabulary::Trie {
 public:
  void Add(std::string_view s, size_t token_index) {
    if (s.empty()) return;
    first_bytes_.set(static_cast<unsigned char>(s[0]));
    int32_t node = 0;
    for (char c : s) {
      const uint64_t key = Key(node, c);
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        terminal_.push_back(-1);
        it = edges_.emplace(key, static_cast<int32_t>(terminal_.size() - 1)).first;
      }
      node = it->second;
    }
    if (terminal_[node] < 0) terminal_[node] = static_cast<int32_t>(token_index);
  }
  bool empty() const { return edges_.empty(); }
  // The first match at or after `from`: {begin, end, token index}, or false.
  bool Find(std::string_view s, size_t from, size_t* begin, size_t* end, int32_t* token) const {
    for (size_t i = from; i < s.size(); ++i) {
      if (!first_bytes_.test(static_cast<unsigned char>(s[i]))) continue;
      int32_t node = 0, best = -1;
      size_t best_end = 0;
      for (size_t k = i; k < s.size(); ++k) {
        auto it = edges_.find(Key(node, s[k]));
        if (it == edges_.end()) break;
        node = it->second;
        if (terminal_[node] >= 0) {
          best = terminal_[node];
          best_end = k + 1;
        }
      }
      if (best >= 0) {
        *begin = i;
        *end = best_end;
        *token = best;
        return true;
      }
    }
    return false;
  }

 private:
  static uint64_t Key(int32_t node, char c) {
    return (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(c);
  }
  absl::flat_hash_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> terminal_{-1};  // node 0 is the root
  std::bitset<256> first_bytes_;
};

namespace {

bool LastCharIsWord(std::string_view s) {
  if (s.empty()) return false;
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t pos = start;
  return IsAlphanumeric(NextCodePoint(s, &pos));
}

bool FirstCharIsWord(std::string_view s) {
  if (s.empty()) return false;
  size_t pos = 0;
  return IsAlphanumeric(NextCodePoint(s, &pos));
}

// The start of the run of whitespace that ends `s`.
size_t TrailingSpaceStart(std::string_view s) {
  size_t left = s.size();
  while (left > 0) {
    size_t start = left - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t pos = start;
    if (!IsWhitespace(NextCodePoint(s, &pos))) break;
    left = start;
  }
  return left;
}

// The length of the run of whitespace that starts `s`.
size_t LeadingSpaceLength(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t next = pos;
    if (!IsWhitespace(NextCodePoint(s, &next))) break;
    pos = next;
  }
  return pos;
}

absl::StatusOr<AddedToken> ParseToken(const Json& t, const std::string& path) {
  if (!t.is_object()) return JsonError(path, "must be an object");
  AddedToken tok;
  absl::StatusOr<std::optional<int64_t>> id = OptionalInt(t, "id", path);
  if (!id.ok()) return id.status();
  if (!id->has_value() || **id < 0 || **id >= (int64_t{1} << 24)) {
    return JsonError(JsonChild(path, "id"), "must be an id in [0, 2^24)");
  }
  tok.id = static_cast<int32_t>(**id);
  absl::StatusOr<std::string> content = RequiredString(t, "content", path);
  if (!content.ok()) return content.status();
  tok.content = *std::move(content);
  if (tok.content.empty()) return JsonError(JsonChild(path, "content"), "must not be empty");
  for (auto [key, dst, def] : {std::tuple{"single_word", &tok.single_word, false},
                               std::tuple{"lstrip", &tok.lstrip, false}, std::tuple{"rstrip", &tok.rstrip, false},
                               std::tuple{"special", &tok.special, false}}) {
    absl::StatusOr<std::optional<bool>> v = OptionalBool(t, key, path);
    if (!v.ok()) return v.status();
    *dst = v->value_or(def);
  }
  absl::StatusOr<std::optional<bool>> normalized = OptionalBool(t, "normalized", path);
  if (!normalized.ok()) return normalized.status();
  tok.normalized = normalized->value_or(!tok.special);
  return tok;
}

}  // namespace

AddedVocabulary::AddedVocabulary()
    : raw_trie_(std::make_unique<Trie>()), normalized_trie_(std::make_unique<Trie>()) {}
AddedVocabulary::~AddedVocabulary() = default;

absl::StatusOr<std::unique_ptr<AddedVocabulary>> AddedVocabulary::FromJson(const Json* j, const std::string& path,
                                                                            const Normalizer& normalizer) {
  auto v = std::unique_ptr<AddedVocabulary>(new AddedVocabulary());
  if (j == nullptr || j->is_null()) return v;
  if (!j->is_array()) return JsonError(path, "must be an array");
  for (size_t i = 0; i < j->size(); ++i) {
    absl::StatusOr<AddedToken> tok = ParseToken((*j)[i], JsonIndex(path, i));
    if (!tok.ok()) return tok.status();
    if (FindInvalidUtf8(tok->content)) return JsonError(JsonIndex(path, i), "content is not UTF-8");
    v->by_content_[tok->content] = tok->id;
    v->by_id_[tok->id] = v->tokens_.size();
    v->tokens_.push_back(*std::move(tok));
  }
  for (size_t i = 0; i < v->tokens_.size(); ++i) {
    const AddedToken& t = v->tokens_[i];
    if (!t.normalized) {
      v->raw_trie_->Add(t.content, i);
      continue;
    }
    std::string n = t.content;
    if (absl::Status s = normalizer.Apply(&n); !s.ok()) return s;
    v->normalized_trie_->Add(n, i);
  }
  return v;
}

void AddedVocabulary::Split(std::string_view text, bool normalized, std::vector<Segment>* out) const {
  const Trie& trie = normalized ? *normalized_trie_ : *raw_trie_;
  size_t done = 0, from = 0, b = 0, e = 0;
  int32_t index = -1;
  while (!trie.empty() && trie.Find(text, from, &b, &e, &index)) {
    from = e;
    const AddedToken& t = tokens_[index];
    if (t.single_word && (LastCharIsWord(text.substr(0, b)) || FirstCharIsWord(text.substr(e)))) continue;
    if (t.lstrip) b = std::max(TrailingSpaceStart(text.substr(0, b)), done);
    if (t.rstrip) e += LeadingSpaceLength(text.substr(e));
    if (done < b) out->push_back({done, b, -1});
    out->push_back({b, e, t.id});
    done = e;
    from = std::max(from, e);
  }
  if (done < text.size() || text.empty()) out->push_back({done, text.size(), -1});
}

const AddedToken* AddedVocabulary::ById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::IdOf(std::string_view content) const {
  auto it = by_content_.find(AsAbsl(content));
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

}  // namespace adapterd::text
