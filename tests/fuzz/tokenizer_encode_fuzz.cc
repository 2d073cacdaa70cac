// libFuzzer target: arbitrary bytes as text for two fixed tokenizers built
// here (a Llama 3 style byte-level BPE with merges learned from a sample, and
// a Llama 2 style byte-fallback BPE with Metaspace). Encode, Decode and
// IncrementalDecoder must never crash; invalid UTF-8 must be rejected; for
// valid UTF-8 the byte-level tokenizer must round-trip exactly, streaming
// must equal Decode in valid UTF-8 deltas, and a stop-string matcher fed the
// deltas must release exactly the text before the first stop string.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/text/incremental_decoder.h"
#include "server/text/pre_tokenizer.h"
#include "server/text/stop_string_matcher.h"
#include "server/text/tokenizer.h"
#include "server/text/unicode_util.h"

namespace {

using Json = nlohmann::json;
using adapterd::text::Tokenizer;

constexpr char kSample[] =
    "The quick brown fox jumps over the lazy dog. Don't stop; it's 2024 and we'll see 12345 things.\n"
    "Les élèves étudient à l'école. Über den Wolken muss die Freiheit wohl grenzenlos sein.\n"
    "東京都は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.\n"
    "مرحبا بالعالم. नमस्ते दुनिया। สวัสดีชาวโลก Привет, мир! Γειά σου κόσμε.\n"
    "emoji 👨‍👩‍👧‍👦 🇺🇸 👍🏽 and tabs\tand  spaces   and\r\nnewlines\n\n";

constexpr char kLlama3Pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Learns `count` merges over the byte-level words of kSample.
Json ByteLevelModel(int count) {
  const auto& alphabet = adapterd::text::ByteLevelAlphabet();
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[alphabet[b]] = b;
  std::vector<std::vector<std::string>> words;
  std::string word;
  for (char c : std::string(kSample)) {
    if (c == ' ' && !word.empty()) {
      std::vector<std::string> symbols;
      for (char w : word) symbols.push_back(alphabet[static_cast<unsigned char>(w)]);
      words.push_back(symbols);
      word.clear();
    }
    word.push_back(c);
  }
  Json merges = Json::array();
  for (int m = 0; m < count; ++m) {
    std::map<std::pair<std::string, std::string>, int> pairs;
    for (const auto& w : words) {
      for (size_t i = 0; i + 1 < w.size(); ++i) ++pairs[{w[i], w[i + 1]}];
    }
    if (pairs.empty()) break;
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it) {
      if (it->second > best->second) best = it;
    }
    const auto [a, b] = best->first;
    merges.push_back({a, b});
    if (!vocab.contains(a + b)) vocab[a + b] = static_cast<int>(vocab.size());
    for (auto& w : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < w.size(); ++i) {
        if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) {
          out.push_back(a + b);
          ++i;
        } else {
          out.push_back(w[i]);
        }
      }
      w = out;
    }
  }
  return Json{{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", true}};
}

std::unique_ptr<Tokenizer> Make(const Json& j, const std::string& config) {
  auto t = Tokenizer::FromJson(j.dump(), config, "fuzz");
  if (!t.ok()) {
    fprintf(stderr, "%s\n", t.status().ToString().c_str());
    abort();
  }
  return *std::move(t);
}

const std::vector<std::unique_ptr<Tokenizer>>& Tokenizers() {
  static auto* tokenizers = [] {
    auto* v = new std::vector<std::unique_ptr<Tokenizer>>();
    Json model = ByteLevelModel(300);
    const int eot = static_cast<int>(model["vocab"].size());
    Json byte_level = {
        {"added_tokens", Json::array({{{"id", eot}, {"content", "<|eot_id|>"}, {"special", true}}})},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers", Json::array({{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Pattern}}},
                                          {"behavior", "Isolated"}},
                                         {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model", model}};
    v->push_back(Make(byte_level, ""));
    Json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
    for (int b = 0; b < 256; ++b) {
      char hex[8];
      snprintf(hex, sizeof hex, "<0x%02X>", b);
      vocab[hex] = 3 + b;
    }
    const std::string meta = "\xE2\x96\x81";
    for (const std::string& w : std::vector<std::string>{meta, meta + "the", meta + "a", "e", "s", "t", "h", "th", meta + "t", meta + "th"}) {
      vocab[w] = static_cast<int>(vocab.size());
    }
    Json spm = {
        {"added_tokens", Json::array({{{"id", 1}, {"content", "<s>"}, {"special", true}},
                                      {{"id", 2}, {"content", "</s>"}, {"special", true}}})},
        {"pre_tokenizer", {{"type", "Metaspace"}, {"prepend_scheme", "first"}, {"split", false}}},
        {"decoder", {{"type", "Sequence"},
                     {"decoders", Json::array({{{"type", "Replace"}, {"pattern", {{"String", meta}}}, {"content", " "}},
                                               {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                               {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"unk_token", "<unk>"}, {"byte_fallback", true},
                   {"fuse_unk", true},
                   {"merges", Json::array({{"t", "h"}, {meta, "t"}, {meta + "t", "h"}})}}}};
    v->push_back(Make(spm, R"({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                               "clean_up_tokenization_spaces": true})"));
    return v;
  }();
  return *tokenizers;
}

// Aborts with `what` when `ok` is false.
void Check(bool ok, const char* what) {
  if (ok) return;
  fprintf(stderr, "tokenizer_encode_fuzz: %s\n", what);
  abort();
}

// The text before the first stop string to complete in `text` (the longest
// of those ending first), or all of it.
std::string BeforeFirstStop(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t best = std::string::npos;
    for (const std::string& s : stops) {
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0) best = std::min(best, end - s.size());
    }
    if (best != std::string::npos) return text.substr(0, best);
  }
  return text;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Tokenizer& t = *Tokenizers()[data[0] % Tokenizers().size()];
  const bool lossless = data[0] % Tokenizers().size() == 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto ids = t.Encode(text, (data[0] & 2) != 0);
  const bool valid = !adapterd::text::FindInvalidUtf8(text).has_value();
  Check(ids.ok() == valid, "Encode accepted invalid UTF-8 or rejected valid UTF-8");
  // Decode the ids, or the input read as ids where it was not UTF-8.
  std::vector<int32_t> seq;
  if (ids.ok()) {
    seq = *ids;
  } else {
    for (size_t i = 1; i + 1 < size; i += 2) seq.push_back((data[i] << 8 | data[i + 1]) % (t.vocab_size() + 8));
  }
  for (bool skip : {false, true}) {
    const std::string whole = t.Decode(seq, skip);
    Check(!(ids.ok() && lossless && !skip && (data[0] & 2) == 0) || whole == text,
          "byte-level BPE did not round-trip");
    auto stops = adapterd::text::StopStringMatcher::Create({"ab", "\n\n", "\xC3\xA9", "the end"}, {});
    adapterd::text::IncrementalDecoder dec(t, skip);
    std::string streamed, released;
    bool matched = false;
    for (size_t i = 0; i <= seq.size(); ++i) {
      const std::string delta = i < seq.size() ? dec.Push(seq[i]) : dec.Finish();
      Check(!adapterd::text::FindInvalidUtf8(delta), "a delta is not valid UTF-8");
      streamed += delta;
      if (!matched) {
        auto r = (*stops)->Feed(delta);
        released += r.text;
        matched = r.matched.has_value();
      }
    }
    if (!matched) released += (*stops)->Flush();
    Check(streamed == whole, "the deltas differ from Decode");
    Check(released == BeforeFirstStop(whole, {"ab", "\n\n", "\xC3\xA9", "the end"}),
          "the stop-string matcher released other text");
  }
  return 0;
}
