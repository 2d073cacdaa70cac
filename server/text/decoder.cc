#include "server/text/decoder.h"

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/text/pre_tokenizer.h"
#include "server/text/unicode_util.h"

namespace adapterd::text {
namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";
constexpr char32_t kByteLevelLimit = 0x144;

// Byte-level character to byte, -1 for characters outside the alphabet.
const std::array<int16_t, kByteLevelLimit>& ByteLevelInverse() {
  static const auto* inverse = [] {
    auto* inv = new std::array<int16_t, kByteLevelLimit>();
    inv->fill(-1);
    const auto& alphabet = ByteLevelAlphabet();
    for (int b = 0; b < 256; ++b) {
      size_t pos = 0;
      (*inv)[NextCodePoint(alphabet[b], &pos)] = static_cast<int16_t>(b);
    }
    return inv;
  }();
  return *inverse;
}

// The bytes a ByteLevel decoder makes of one token: each character's byte,
// or the token's own UTF-8 when any character is outside the alphabet.
void AppendByteLevelBytes(std::string_view token, std::string* bytes) {
  const auto& inv = ByteLevelInverse();
  const size_t mark = bytes->size();
  size_t pos = 0;
  while (pos < token.size()) {
    const char32_t cp = NextCodePoint(token, &pos);
    if (cp >= kByteLevelLimit || inv[cp] < 0) {
      bytes->resize(mark);
      bytes->append(token);
      return;
    }
    bytes->push_back(static_cast<char>(inv[cp]));
  }
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A "<0xXX>" byte token, read as Rust's u8::from_str_radix(XX, 16) would
// (which also takes a leading '+'): the byte, or -1.
int ByteToken(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  if (t[3] == '+') return HexDigit(t[4]);
  const int hi = HexDigit(t[3]), lo = HexDigit(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace


Decoder::~Decoder() = default;

absl::StatusOr<std::unique_ptr<Decoder>> Decoder::FromJson(const Json& j, const std::string& path) {
  auto d = std::unique_ptr<Decoder>(new Decoder());
  if (j.is_null()) {
    d->join_with_spaces_ = true;
    return d;
  }
  if (absl::Status s = Parse(j, path, &d->steps_); !s.ok()) return s;
  return d;
}

absl::Status Decoder::Parse(const Json& j, const std::string& path, std::vector<Step>* steps) {
  absl::StatusOr<std::string> type = ComponentType(j, path);
  if (!type.ok()) return type.status();
  Step step;
  if (*type == "Sequence") {
    absl::StatusOr<const Json*> list = RequiredArray(j, "decoders", path);
    if (!list.ok()) return list.status();
    for (size_t i = 0; i < (*list)->size(); ++i) {
      if (absl::Status s = Parse((**list)[i], JsonIndex(JsonChild(path, "decoders"), i), steps); !s.ok()) return s;
    }
    return absl::OkStatus();
  } else if (*type == "ByteLevel") {
    step.kind = Kind::kByteLevel;
  } else if (*type == "ByteFallback") {
    step.kind = Kind::kByteFallback;
  } else if (*type == "Fuse") {
    step.kind = Kind::kFuse;
  } else if (*type == "Strip") {
    step.kind = Kind::kStrip;
    absl::StatusOr<std::string> content = RequiredString(j, "content", path);
    if (!content.ok()) return content.status();
    size_t pos = 0;
    if (content->empty() || FindInvalidUtf8(*content) || (NextCodePoint(*content, &pos), pos != content->size())) {
      return JsonError(JsonChild(path, "content"), "must be exactly one character");
    }
    step.text = *std::move(content);
    for (auto [key, dst] : {std::pair{"start", &step.start}, std::pair{"stop", &step.stop}}) {
      absl::StatusOr<std::optional<int64_t>> v = OptionalInt(j, key, path);
      if (!v.ok()) return v.status();
      if (!v->has_value() || **v < 0) return JsonError(JsonChild(path, key), "must be a non-negative integer");
      *dst = **v;
    }
  } else if (*type == "Replace") {
    step.kind = Kind::kReplace;
    absl::StatusOr<JsonPattern> jp = PatternField(j, "pattern", path);
    if (!jp.ok()) return jp.status();
    absl::StatusOr<SplitPattern> sp = SplitPattern::FromJson(*jp, JsonChild(path, "pattern"));
    if (!sp.ok()) return sp.status();
    step.pattern = std::make_unique<SplitPattern>(*std::move(sp));
    absl::StatusOr<std::string> c = RequiredString(j, "content", path);
    if (!c.ok()) return c.status();
    step.text = *std::move(c);
  } else if (*type == "Metaspace") {
    step.kind = Kind::kMetaspace;
    absl::StatusOr<std::optional<std::string>> rep = OptionalString(j, "replacement", path);
    if (!rep.ok()) return rep.status();
    step.text = rep->value_or("\xE2\x96\x81");
    size_t pos = 0;
    if (step.text.empty() || FindInvalidUtf8(step.text) || (NextCodePoint(step.text, &pos), pos != step.text.size())) {
      return JsonError(JsonChild(path, "replacement"), "must be exactly one character");
    }
    absl::StatusOr<std::optional<std::string>> scheme = OptionalString(j, "prepend_scheme", path);
    if (!scheme.ok()) return scheme.status();
    absl::StatusOr<std::optional<bool>> legacy = OptionalBool(j, "add_prefix_space", path);
    if (!legacy.ok()) return legacy.status();
    if (scheme->has_value()) {
      if (**scheme != "always" && **scheme != "first" && **scheme != "never") {
        return JsonError(JsonChild(path, "prepend_scheme"), absl::StrCat("\"", **scheme, "\" is not always, first or never"));
      }
      step.strip_first = **scheme != "never";
    } else if (legacy->has_value()) {
      step.strip_first = **legacy;
    }
  } else {
    return Unsupported(path, *type);
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

std::string Decoder::Decode(const std::vector<std::string_view>& tokens) const {
  Stream stream(*this);
  std::string out;
  for (std::string_view t : tokens) stream.Push(t, &out);
  stream.Finish(&out);
  return out;
}

Decoder::Stream::Stream(const Decoder& decoder) : decoder_(decoder), states_(decoder.steps_.size()) {}

void Decoder::Stream::Push(std::string_view token, std::string* out) { Feed(0, token, true, true, out); }

void Decoder::Stream::Finish(std::string* out) { FinishStep(0, out); }

void Decoder::Stream::Feed(size_t i, std::string_view text, bool begin, bool end, std::string* out) {
  if (i == decoder_.steps_.size()) {
    if (begin && decoder_.join_with_spaces_ && sink_tokens_++ > 0) out->push_back(' ');
    out->append(text);
    return;
  }
  const Step& step = decoder_.steps_[i];
  State& st = states_[i];
  if (step.whole_tokens()) {
    if (begin && st.open) {
      st.open = false;
      const std::string token = std::move(st.buffer);
      WholeToken(i, token, out);
    }
    if (begin && end) return WholeToken(i, text, out);
    if (begin) st.buffer.assign(text);
    else st.buffer.append(text);
    st.open = true;
    if (end) {
      st.open = false;
      const std::string token = std::move(st.buffer);
      WholeToken(i, token, out);
    }
    return;
  }
  switch (step.kind) {
    case Kind::kFuse:
      Feed(i + 1, text, !st.emitted, false, out);
      st.emitted = true;
      return;
    case Kind::kStrip:
      return StreamStrip(i, text, begin, end, out);
    case Kind::kMetaspace: {
      if (begin) ++st.token_index;
      const bool drop = st.token_index == 0 && step.strip_first;
      std::string t;
      t.reserve(text.size());
      for (size_t pos = text.find(step.text), prev = 0;; pos = text.find(step.text, prev)) {
        t.append(text.substr(prev, pos == std::string_view::npos ? std::string_view::npos : pos - prev));
        if (pos == std::string_view::npos) break;
        if (!drop) t.push_back(' ');
        prev = pos + step.text.size();
      }
      return Feed(i + 1, t, begin, end, out);
    }
    default:
      return;
  }
}

void Decoder::Stream::WholeToken(size_t i, std::string_view token, std::string* out) {
  const Step& step = decoder_.steps_[i];
  State& st = states_[i];
  switch (step.kind) {
    case Kind::kReplace: {
      std::string replaced;
      if (!step.pattern->ReplaceAll(token, step.text, &replaced).ok()) replaced.assign(token);
      return Feed(i + 1, replaced, true, true, out);
    }
    case Kind::kByteFallback:
      if (const int b = ByteToken(token); b >= 0) {
        st.bytes.push_back(static_cast<char>(b));
        return;
      }
      FlushBytes(i, out);
      return Feed(i + 1, token, true, true, out);
    case Kind::kByteLevel:
      AppendByteLevelBytes(token, &st.bytes);
      return StreamByteLevel(i, /*final=*/false, out);
    default:
      return;
  }
}

void Decoder::Stream::FlushBytes(size_t i, std::string* out) {
  State& st = states_[i];
  if (st.bytes.empty()) return;
  const std::string bytes = std::move(st.bytes);
  st.bytes.clear();
  if (!FindInvalidUtf8(bytes)) return Feed(i + 1, bytes, true, true, out);
  for (size_t k = 0; k < bytes.size(); ++k) Feed(i + 1, kReplacementChar, true, true, out);
}

void Decoder::Stream::StreamByteLevel(size_t i, bool final, std::string* out) {
  State& st = states_[i];
  const size_t keep = final ? 0 : IncompleteUtf8Suffix(st.bytes);
  std::string text;
  AppendLossyUtf8(&text, std::string_view(st.bytes).substr(0, st.bytes.size() - keep));
  st.bytes.erase(0, st.bytes.size() - keep);
  if (text.empty() && !final) return;
  Feed(i + 1, text, !st.emitted, final, out);
  st.emitted = true;
}

void Decoder::Stream::StreamStrip(size_t i, std::string_view text, bool begin, bool end, std::string* out) {
  const Step& step = decoder_.steps_[i];
  State& st = states_[i];
  if (begin) {
    st.lead_left = step.start;
    st.held = 0;
  }
  std::string t;
  t.reserve(text.size());
  const std::string_view c = step.text;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t n = std::min(Utf8SequenceLength(static_cast<unsigned char>(text[pos])), text.size() - pos);
    const bool is_c = text.substr(pos, n) == c;
    pos += n;
    if (st.lead_left > 0 && is_c) {
      --st.lead_left;
      continue;
    }
    st.lead_left = 0;
    if (is_c) {
      if (++st.held > step.stop) {
        --st.held;
        t.append(c);
      }
      continue;
    }
    for (; st.held > 0; --st.held) t.append(c);
    t.append(text.substr(pos - n, n));
  }
  if (end) st.held = 0;  // the last `stop` characters are dropped
  Feed(i + 1, t, begin, end, out);
}

void Decoder::Stream::FinishStep(size_t i, std::string* out) {
  if (i == decoder_.steps_.size()) return;
  const Step& step = decoder_.steps_[i];
  State& st = states_[i];
  if (step.whole_tokens() && st.open) {
    st.open = false;
    const std::string token = std::move(st.buffer);
    WholeToken(i, token, out);
  }
  switch (step.kind) {
    case Kind::kByteFallback:
      FlushBytes(i, out);
      break;
    case Kind::kByteLevel:
      StreamByteLevel(i, /*final=*/true, out);
      break;
    case Kind::kFuse:
      Feed(i + 1, "", !st.emitted, true, out);
      st.emitted = true;
      break;
    default:
      break;
  }
  FinishStep(i + 1, out);
}

}  // namespace adapterd::text
