#include "server/text/pre_tokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/text/unicode_util.h"

namespace adapterd::text {
namespace {

// tokenizers' ByteLevel pre-tokenizer regex (GPT-2's).
constexpr char kGpt2Pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
// tokenizers' Whitespace pre-tokenizer keeps the matches of this pattern.
constexpr char kWordPattern[] = "\\w+|[^\\w\\s]+";

absl::StatusOr<std::unique_ptr<SplitPattern>> RegexPattern(const char* pattern, const std::string& path) {
  absl::StatusOr<SplitPattern> p = SplitPattern::FromJson(JsonPattern{true, pattern}, path);
  if (!p.ok()) return p.status();
  return std::make_unique<SplitPattern>(*std::move(p));
}

bool IsWhitespaceChar(char32_t c) { return IsWhitespace(c); }
bool IsNumericChar(char32_t c) { return IsNumeric(c); }
bool IsPunctuationChar(char32_t c) { return IsPunctuation(c); }

}  // namespace

const std::array<std::string, 256>& ByteLevelAlphabet() {
  static const std::array<std::string, 256>* alphabet = [] {
    auto* a = new std::array<std::string, 256>();
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool visible = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      AppendUtf8(&(*a)[b], visible ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++));
    }
    return a;
  }();
  return *alphabet;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const Json& j, const std::string& path) {
  auto p = std::unique_ptr<PreTokenizer>(new PreTokenizer());
  if (!j.is_null()) {
    if (absl::Status s = Parse(j, path, &p->steps_); !s.ok()) return s;
  }
  return p;
}

absl::Status PreTokenizer::ParseByteLevel(const Json& j, const std::string& path, Step* step) {
  step->kind = Kind::kByteLevel;
  absl::StatusOr<std::optional<bool>> prefix = OptionalBool(j, "add_prefix_space", path);
  if (!prefix.ok()) return prefix.status();
  absl::StatusOr<std::optional<bool>> trim = OptionalBool(j, "trim_offsets", path);  // offsets only
  if (!trim.ok()) return trim.status();
  absl::StatusOr<std::optional<bool>> use_regex = OptionalBool(j, "use_regex", path);
  if (!use_regex.ok()) return use_regex.status();
  step->add_prefix_space = prefix->value_or(true);
  if (use_regex->value_or(true)) {
    absl::StatusOr<std::unique_ptr<SplitPattern>> re = RegexPattern(kGpt2Pattern, path);
    if (!re.ok()) return re.status();
    step->pattern = *std::move(re);
  }
  return absl::OkStatus();
}

absl::Status PreTokenizer::ParseMetaspace(const Json& j, const std::string& path, Step* step) {
  step->kind = Kind::kMetaspace;
  absl::StatusOr<std::optional<std::string>> rep = OptionalString(j, "replacement", path);
  if (!rep.ok()) return rep.status();
  step->replacement = rep->value_or("\xE2\x96\x81");
  size_t pos = 0;
  if (step->replacement.empty() || FindInvalidUtf8(step->replacement) ||
      (NextCodePoint(step->replacement, &pos), pos != step->replacement.size())) {
    return JsonError(JsonChild(path, "replacement"), "must be exactly one character");
  }
  absl::StatusOr<std::optional<std::string>> scheme = OptionalString(j, "prepend_scheme", path);
  if (!scheme.ok()) return scheme.status();
  absl::StatusOr<std::optional<bool>> legacy = OptionalBool(j, "add_prefix_space", path);
  if (!legacy.ok()) return legacy.status();
  if (scheme->has_value()) {
    if (**scheme == "always") step->prepend = Prepend::kAlways;
    else if (**scheme == "first") step->prepend = Prepend::kFirst;
    else if (**scheme == "never") step->prepend = Prepend::kNever;
    else return JsonError(JsonChild(path, "prepend_scheme"), absl::StrCat("\"", **scheme, "\" is not always, first or never"));
  } else if (legacy->has_value()) {
    step->prepend = **legacy ? Prepend::kAlways : Prepend::kNever;
  }
  absl::StatusOr<std::optional<bool>> split = OptionalBool(j, "split", path);
  if (!split.ok()) return split.status();
  step->split = split->value_or(true);
  step->pattern = std::make_unique<SplitPattern>(SplitPattern::Literal(step->replacement));
  step->behavior = SplitBehavior::kMergedWithNext;
  return absl::OkStatus();
}

absl::Status PreTokenizer::Parse(const Json& j, const std::string& path, std::vector<Step>* steps) {
  absl::StatusOr<std::string> type = ComponentType(j, path);
  if (!type.ok()) return type.status();
  Step step;
  step.kind = Kind::kSplit;
  if (*type == "Sequence") {
    absl::StatusOr<const Json*> list = RequiredArray(j, "pretokenizers", path);
    if (!list.ok()) return list.status();
    for (size_t i = 0; i < (*list)->size(); ++i) {
      const std::string p = JsonIndex(JsonChild(path, "pretokenizers"), i);
      if (absl::Status s = Parse((**list)[i], p, steps); !s.ok()) return s;
    }
    return absl::OkStatus();
  } else if (*type == "ByteLevel") {
    if (absl::Status s = ParseByteLevel(j, path, &step); !s.ok()) return s;
  } else if (*type == "Metaspace") {
    if (absl::Status s = ParseMetaspace(j, path, &step); !s.ok()) return s;
  } else if (*type == "Split") {
    absl::StatusOr<JsonPattern> jp = PatternField(j, "pattern", path);
    if (!jp.ok()) return jp.status();
    absl::StatusOr<SplitPattern> sp = SplitPattern::FromJson(*jp, JsonChild(path, "pattern"));
    if (!sp.ok()) return sp.status();
    step.pattern = std::make_unique<SplitPattern>(*std::move(sp));
    absl::StatusOr<SplitBehavior> b = SplitBehaviorField(j, "behavior", path);
    if (!b.ok()) return b.status();
    step.behavior = *b;
    absl::StatusOr<std::optional<bool>> inv = OptionalBool(j, "invert", path);
    if (!inv.ok()) return inv.status();
    step.invert = inv->value_or(false);
  } else if (*type == "Digits") {
    absl::StatusOr<std::optional<bool>> ind = OptionalBool(j, "individual_digits", path);
    if (!ind.ok()) return ind.status();
    step.pattern = std::make_unique<SplitPattern>(SplitPattern::CharClass(&IsNumericChar));
    step.behavior = ind->value_or(false) ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
  } else if (*type == "Whitespace") {
    absl::StatusOr<std::unique_ptr<SplitPattern>> re = RegexPattern(kWordPattern, path);
    if (!re.ok()) return re.status();
    step.pattern = *std::move(re);
    step.behavior = SplitBehavior::kRemoved;
    step.invert = true;
  } else if (*type == "WhitespaceSplit" || *type == "BertPreTokenizer") {
    step.pattern = std::make_unique<SplitPattern>(SplitPattern::CharClass(&IsWhitespaceChar));
    step.behavior = SplitBehavior::kRemoved;
    if (*type == "BertPreTokenizer") {
      steps->push_back(std::move(step));
      step = Step{};
      step.kind = Kind::kSplit;
      step.pattern = std::make_unique<SplitPattern>(SplitPattern::CharClass(&IsPunctuationChar));
      step.behavior = SplitBehavior::kIsolated;
    }
  } else if (*type == "Punctuation") {
    step.pattern = std::make_unique<SplitPattern>(SplitPattern::CharClass(&IsPunctuationChar));
    step.behavior = SplitBehavior::kIsolated;
    if (JsonMember(j, "behavior") != nullptr) {
      absl::StatusOr<SplitBehavior> b = SplitBehaviorField(j, "behavior", path);
      if (!b.ok()) return b.status();
      step.behavior = *b;
    }
  } else if (*type == "CharDelimiterSplit") {
    absl::StatusOr<std::string> d = RequiredString(j, "delimiter", path);
    if (!d.ok()) return d.status();
    step.pattern = std::make_unique<SplitPattern>(SplitPattern::Literal(*d));
    step.behavior = SplitBehavior::kRemoved;
  } else {
    return Unsupported(path, *type);
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status PreTokenizer::SplitPieces(const Step& step, std::vector<Piece>* pieces) {
  std::vector<Piece> out;
  out.reserve(pieces->size() * 2);
  std::vector<SplitPattern::Span> spans;
  for (Piece& piece : *pieces) {
    spans.clear();
    if (absl::Status s = step.pattern->Split(piece.text, step.behavior, step.invert, &spans); !s.ok()) return s;
    if (spans.size() == 1 && spans[0].first == 0 && spans[0].second == piece.text.size()) {
      out.push_back(std::move(piece));
      continue;
    }
    for (const auto& [b, e] : spans) out.push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
  }
  pieces->swap(out);
  return absl::OkStatus();
}

absl::Status PreTokenizer::ApplyByteLevel(const Step& step, std::vector<Piece>* pieces) {
  if (step.add_prefix_space) {
    for (Piece& p : *pieces) {
      if (!p.text.empty() && p.text[0] != ' ') p.text.insert(0, " ");
    }
  }
  if (step.pattern != nullptr) {
    if (absl::Status s = SplitPieces(step, pieces); !s.ok()) return s;
  }
  const std::array<std::string, 256>& alphabet = ByteLevelAlphabet();
  std::string mapped;
  for (Piece& p : *pieces) {
    mapped.clear();
    mapped.reserve(p.text.size() * 2);
    for (char c : p.text) mapped.append(alphabet[static_cast<unsigned char>(c)]);
    p.text.swap(mapped);
  }
  return absl::OkStatus();
}

absl::Status PreTokenizer::ApplyMetaspace(const Step& step, std::vector<Piece>* pieces) {
  for (Piece& p : *pieces) {
    if (p.text.find(' ') != std::string::npos) p.text = absl::StrReplaceAll(p.text, {{" ", step.replacement}});
    const bool starts = p.text.compare(0, step.replacement.size(), step.replacement) == 0;
    if (!p.text.empty() && !starts && (step.prepend == Prepend::kAlways || (step.prepend == Prepend::kFirst && p.at_start))) {
      p.text.insert(0, step.replacement);
    }
  }
  if (!step.split) return absl::OkStatus();
  return SplitPieces(step, pieces);
}

absl::Status PreTokenizer::Apply(std::vector<Piece>* pieces) const {
  for (const Step& step : steps_) {
    absl::Status s;
    switch (step.kind) {
      case Kind::kByteLevel:
        s = ApplyByteLevel(step, pieces);
        break;
      case Kind::kMetaspace:
        s = ApplyMetaspace(step, pieces);
        break;
      case Kind::kSplit:
        s = SplitPieces(step, pieces);
        break;
    }
    if (!s.ok()) return s;
  }
  std::erase_if(*pieces, [](const Piece& p) { return p.text.empty(); });
  return absl::OkStatus();
}

}  // namespace adapterd::text
