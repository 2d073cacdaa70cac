#include "server/text/bpe_trainer.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/text/unicode_util.h"

namespace adapterd::text {
namespace {

using OrderedJson = nlohmann::ordered_json;

// A distinct pre-tokenized word: its current symbols and how often it occurs.
struct Word {
  std::vector<int32_t> symbols;
  int64_t count = 0;
};

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}
int32_t First(uint64_t key) { return static_cast<int32_t>(key >> 32); }
int32_t Second(uint64_t key) { return static_cast<int32_t>(key & 0xffffffffu); }

OrderedJson SplitJson(const std::string& pattern) {
  return OrderedJson{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}};
}

// The pair counts over all words, and which words (may repeat, may be
// stale) hold each pair.
class PairTable {
 public:
  void Add(const Word& w, int32_t index, int64_t sign, int32_t only_with) {
    for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
      const uint64_t key = PairKey(w.symbols[i], w.symbols[i + 1]);
      int64_t& c = counts_[key];
      c += sign * w.count;
      if (c == 0) counts_.erase(key);
      if (sign > 0 && (only_with < 0 || w.symbols[i] == only_with || w.symbols[i + 1] == only_with)) {
        where_[key].push_back(index);
      }
    }
  }
  // The most frequent pair, ties to the smaller key; false when none is left.
  bool Best(uint64_t* key) const {
    int64_t best = 0;
    for (const auto& [k, c] : counts_) {
      if (c > best || (c == best && c > 0 && k < *key)) {
        best = c;
        *key = k;
      }
    }
    return best > 0;
  }
  std::vector<int32_t> TakeWords(uint64_t key) {
    auto it = where_.find(key);
    if (it == where_.end()) return {};
    std::vector<int32_t> out = std::move(it->second);
    where_.erase(it);
    return out;
  }

 private:
  absl::flat_hash_map<uint64_t, int64_t> counts_;
  absl::flat_hash_map<uint64_t, std::vector<int32_t>> where_;
};

// Replaces every non-overlapping (a, b), left to right, by `merged`.
bool MergeWord(Word& w, int32_t a, int32_t b, int32_t merged) {
  bool changed = false;
  size_t out = 0;
  for (size_t i = 0; i < w.symbols.size(); ++i) {
    if (i + 1 < w.symbols.size() && w.symbols[i] == a && w.symbols[i + 1] == b) {
      w.symbols[out++] = merged;
      ++i;
      changed = true;
    } else {
      w.symbols[out++] = w.symbols[i];
    }
  }
  w.symbols.resize(out);
  return changed;
}

std::string ByteLevelForm(const std::string& bytes) {
  const std::array<std::string, 256>& alphabet = ByteLevelAlphabet();
  std::string out;
  for (char c : bytes) out += alphabet[static_cast<unsigned char>(c)];
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTrainer>> BpeTrainer::Create(BpeTrainerOptions options) {
  const int64_t fixed = static_cast<int64_t>(options.special_tokens.size()) + 256;
  if (options.vocab_size < fixed || options.vocab_size > (int64_t{1} << 22)) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size must be in [", fixed, " (special tokens + 256 bytes), 2^22], not ",
                                                   options.vocab_size));
  }
  absl::flat_hash_set<std::string> seen;
  for (const std::string& s : options.special_tokens) {
    if (s.empty() || FindInvalidUtf8(s).has_value() || !seen.insert(s).second) {
      return absl::InvalidArgumentError(absl::StrCat("special_tokens: \"", s, "\" is empty, not UTF-8 or repeated"));
    }
  }
  if (!options.bos_token.empty() && !seen.contains(options.bos_token)) {
    return absl::InvalidArgumentError(absl::StrCat("bos_token \"", options.bos_token, "\" is not a special token"));
  }
  std::unique_ptr<BpeTrainer> t(new BpeTrainer(std::move(options)));
  absl::StatusOr<std::unique_ptr<PreTokenizer>> split =
      PreTokenizer::FromJson(Json::parse(SplitJson(t->options_.split_pattern).dump()), "split_pattern");
  if (!split.ok()) return split.status();
  t->split_ = *std::move(split);
  return t;
}

absl::Status BpeTrainer::Feed(std::string_view text) {
  if (std::optional<size_t> bad = FindInvalidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrCat("training text is not UTF-8 at byte ", *bad));
  }
  std::vector<Piece> pieces;
  size_t pos = 0;
  while (pos < text.size()) {
    // The next special token, if any: the text before it is a piece.
    size_t next = text.size(), len = 0;
    for (const std::string& s : options_.special_tokens) {
      const size_t at = text.find(s, pos);
      if (at < next || (at == next && s.size() > len)) {
        next = at;
        len = s.size();
      }
    }
    if (next > pos) pieces.push_back(Piece{std::string(text.substr(pos, next - pos)), pos == 0});
    pos = next + len;
  }
  if (absl::Status st = split_->Apply(&pieces); !st.ok()) return st;
  for (const Piece& p : pieces) ++word_counts_[p.text];
  return absl::OkStatus();
}

absl::StatusOr<BpeVocabulary> BpeTrainer::Train() const {
  BpeVocabulary v;
  absl::flat_hash_map<std::string, int32_t> id_of;
  for (const std::string& s : options_.special_tokens) {
    id_of.emplace(s, static_cast<int32_t>(v.tokens.size()));
    v.tokens.push_back(s);
  }
  const int32_t first_byte = static_cast<int32_t>(v.tokens.size());
  for (int b = 0; b < 256; ++b) {
    v.tokens.emplace_back(1, static_cast<char>(b));
    id_of.emplace(v.tokens.back(), static_cast<int32_t>(v.tokens.size() - 1));
  }
  // Words in byte order, so that nothing depends on hash iteration order.
  std::vector<std::pair<std::string, int64_t>> sorted(word_counts_.begin(), word_counts_.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words(sorted.size());
  PairTable pairs;
  for (size_t i = 0; i < sorted.size(); ++i) {
    for (char c : sorted[i].first) words[i].symbols.push_back(first_byte + static_cast<unsigned char>(c));
    words[i].count = sorted[i].second;
    pairs.Add(words[i], static_cast<int32_t>(i), +1, -1);
  }
  std::vector<int64_t> visited(words.size(), -1);
  for (int64_t round = 0; static_cast<int64_t>(v.tokens.size()) < options_.vocab_size; ++round) {
    uint64_t best = ~uint64_t{0};
    if (!pairs.Best(&best)) {
      return absl::FailedPreconditionError(
          absl::StrCat("the training text has too few distinct pairs: the vocabulary stops at ", v.tokens.size(),
                       " of vocab_size ", options_.vocab_size));
    }
    const int32_t a = First(best), b = Second(best);
    std::string merged = v.tokens[a] + v.tokens[b];
    auto [it, inserted] = id_of.emplace(merged, static_cast<int32_t>(v.tokens.size()));
    if (inserted) v.tokens.push_back(std::move(merged));
    v.merges.emplace_back(v.tokens[a], v.tokens[b]);
    for (int32_t w : pairs.TakeWords(best)) {
      if (visited[w] == round) continue;
      visited[w] = round;
      Word copy = words[w];
      if (!MergeWord(copy, a, b, it->second)) continue;
      pairs.Add(words[w], w, -1, -1);
      words[w] = std::move(copy);
      pairs.Add(words[w], w, +1, it->second);
    }
  }
  return v;
}

std::string BpeTrainer::TokenizerJson(const BpeVocabulary& vocab) const {
  const size_t n_special = options_.special_tokens.size();
  OrderedJson added = OrderedJson::array();
  for (size_t i = 0; i < n_special; ++i) {
    added.push_back({{"id", i}, {"content", vocab.tokens[i]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  OrderedJson post = nullptr;
  if (!options_.bos_token.empty()) {
    const std::string& bos = options_.bos_token;
    const size_t bos_id = std::find(vocab.tokens.begin(), vocab.tokens.end(), bos) - vocab.tokens.begin();
    auto special = [&](int type_id) { return OrderedJson{{"SpecialToken", {{"id", bos}, {"type_id", type_id}}}}; };
    auto sequence = [](const char* id, int type_id) {
      return OrderedJson{{"Sequence", {{"id", id}, {"type_id", type_id}}}};
    };
    post = {{"type", "TemplateProcessing"},
            {"single", {special(0), sequence("A", 0)}},
            {"pair", {special(0), sequence("A", 0), special(1), sequence("B", 1)}},
            {"special_tokens", {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
  }
  OrderedJson model_vocab = OrderedJson::object();
  for (size_t id = 0; id < vocab.tokens.size(); ++id) {
    model_vocab[id < n_special ? vocab.tokens[id] : ByteLevelForm(vocab.tokens[id])] = id;
  }
  OrderedJson merges = OrderedJson::array();
  for (const auto& [a, b] : vocab.merges) merges.push_back({ByteLevelForm(a), ByteLevelForm(b)});
  OrderedJson split = SplitJson(options_.split_pattern);
  OrderedJson j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", std::move(added)},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {std::move(split),
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
      {"post_processor", std::move(post)},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", std::move(model_vocab)},
        {"merges", std::move(merges)}}}};
  return j.dump(2, ' ', /*ensure_ascii=*/false) + "\n";
}

}  // namespace adapterd::text
