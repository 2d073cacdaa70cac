#include "server/template/template_lexer.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/template/text_util.h"

namespace adapterd::tmpl {
namespace {

bool IsDigitChar(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || IsDigitChar(c); }

// `n` hex digits of body at `at` as a code point; false when they are not there.
bool ReadHex(std::string_view body, size_t at, int n, char32_t* value) {
  *value = 0;
  if (at + n > body.size()) return false;
  for (int i = 0; i < n; ++i) {
    const char c = body[at + i];
    int d;
    if (IsDigitChar(c)) {
      d = c - '0';
    } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
      d = (c | 0x20) - 'a' + 10;
    } else {
      return false;
    }
    *value = *value * 16 + d;
  }
  return true;
}

// Newlines become "\n" and one trailing newline is dropped, as jinja2 does
// with keep_trailing_newline off.
std::string Normalize(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }
  absl::StatusOr<std::vector<Token>> Run();

 private:
  enum class TagKind { kBlock, kVariable, kComment, kRaw };

  int LineOf(size_t pos) const {
    return static_cast<int>(std::upper_bound(line_starts_.begin(), line_starts_.end(), pos) -
                            line_starts_.begin());
  }
  // Tokens come in order, so counting on from the previous one keeps this
  // linear in the source size.
  int ColumnOf(size_t pos) const {
    const size_t start = line_starts_[LineOf(pos) - 1];
    if (column_pos_ < start || column_pos_ > pos) {
      column_pos_ = start;
      column_ = 1;
    }
    column_ += static_cast<int>(text::CodePointCount(std::string_view(src_).substr(column_pos_, pos - column_pos_)));
    column_pos_ = pos;
    return column_;
  }
  absl::Status Error(size_t pos, absl::string_view what) const {
    return absl::InvalidArgumentError(PositionedError(LineOf(pos), ColumnOf(pos), what));
  }
  Token Make(TokenKind kind, size_t pos) const {
    Token t;
    t.kind = kind;
    t.line = LineOf(pos);
    t.column = ColumnOf(pos);
    return t;
  }
  // Length of a run of Python whitespace at `pos`.
  size_t SpaceRun(size_t pos) const {
    size_t p = pos;
    while (p < src_.size()) {
      size_t next = p;
      if (!text::IsSpace(text::DecodeAt(src_, &next))) break;
      p = next;
    }
    return p - pos;
  }
  bool At(size_t pos, std::string_view s) const { return src_.compare(pos, s.size(), s) == 0; }
  void EmitText(std::string text, size_t pos, char sign, bool is_variable);
  absl::Status LexRawBody();
  absl::Status LexComment();
  absl::Status LexTag(bool block);
  bool MatchTagEnd(bool block);
  size_t MatchRawBegin(size_t pos) const;
  absl::StatusOr<size_t> MatchNumber(size_t pos, Token* token) const;
  size_t DigitGroup(size_t pos) const;
  size_t Exponent(size_t pos) const;
  absl::Status Unescape(size_t pos, std::string_view body, std::string* out) const;
  absl::StatusOr<size_t> MatchString(size_t pos, Token* token) const;
  absl::Status MatchOperator(size_t pos, Token* token, size_t* length);

  std::string src_;
  std::vector<size_t> line_starts_;
  mutable size_t column_pos_ = 0;  // ColumnOf's last position and its column
  mutable int column_ = 1;
  size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
  std::vector<char> balance_;
};

// Emits text that precedes a tag, after whitespace control for the tag's sign.
void Lexer::EmitText(std::string text, size_t pos, char sign, bool is_variable) {
  if (sign == '-') {
    text = text::Strip(text, nullptr, false, true);
  } else if (sign != '+' && !is_variable) {  // lstrip_blocks
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if ((l_pos > 0 || line_starting_) && l_pos < text.size()) {
      const std::string_view tail = std::string_view(text).substr(l_pos);
      if (text::Strip(tail, nullptr, true, false).empty()) text.resize(l_pos);
    }
  }
  if (text.empty()) return;
  Token t = Make(TokenKind::kData, pos);
  t.text = std::move(text);
  tokens_.push_back(std::move(t));
}

// `{%(-|+|)\s*raw\s*(-%}\s*|%})` at pos: the match length, or 0.
size_t Lexer::MatchRawBegin(size_t pos) const {
  size_t p = pos + 2;
  if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
  p += SpaceRun(p);
  if (!At(p, "raw")) return 0;
  p += 3;
  p += SpaceRun(p);
  if (At(p, "-%}")) return p + 3 + SpaceRun(p + 3) - pos;
  if (At(p, "%}")) return p + 2 - pos;
  return 0;
}

absl::StatusOr<std::vector<Token>> Lexer::Run() {
  while (pos_ < src_.size()) {
    size_t tag = pos_;
    while (true) {
      tag = src_.find('{', tag);
      if (tag == std::string::npos || tag + 1 >= src_.size()) {
        tag = std::string::npos;
        break;
      }
      const char c = src_[tag + 1];
      if (c == '{' || c == '%' || c == '#') break;
      ++tag;
    }
    if (tag == std::string::npos) {
      EmitText(src_.substr(pos_), pos_, '+', true);
      break;
    }
    const char c = src_[tag + 1];
    const char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+')
                          ? src_[tag + 2]
                          : '\0';
    const size_t raw = c == '%' ? MatchRawBegin(tag) : 0;
    EmitText(src_.substr(pos_, tag - pos_), pos_, sign, c == '{');
    if (raw > 0) {
      pos_ = tag + raw;
      line_starting_ = src_[pos_ - 1] == '\n';
      if (absl::Status s = LexRawBody(); !s.ok()) return s;
      continue;
    }
    line_starting_ = false;
    pos_ = tag + 2 + (sign ? 1 : 0);
    absl::Status s = c == '#' ? LexComment() : LexTag(c == '%');
    if (!s.ok()) return s;
  }
  Token eof = Make(TokenKind::kEof, src_.size());
  tokens_.push_back(std::move(eof));
  return std::move(tokens_);
}

absl::Status Lexer::LexRawBody() {
  if (pos_ >= src_.size()) return absl::OkStatus();  // jinja2 accepts a raw tag that ends the template
  for (size_t p = pos_; p + 1 < src_.size(); ++p) {
    if (!At(p, "{%")) continue;
    size_t q = p + 2;
    const char sign = q < src_.size() && (src_[q] == '-' || src_[q] == '+') ? src_[q] : '\0';
    if (sign) ++q;
    q += SpaceRun(q);
    if (!At(q, "endraw")) continue;
    q += 6;
    q += SpaceRun(q);
    size_t end;
    if (At(q, "+%}")) {
      end = q + 3;
    } else if (At(q, "-%}")) {
      end = q + 3 + SpaceRun(q + 3);
    } else if (At(q, "%}")) {
      end = q + 2 + (At(q + 2, "\n") ? 1 : 0);
    } else {
      continue;
    }
    EmitText(src_.substr(pos_, p - pos_), pos_, sign, false);
    pos_ = end;
    line_starting_ = src_[end - 1] == '\n';
    return absl::OkStatus();
  }
  return Error(pos_, "missing end of raw directive ({% endraw %})");
}

absl::Status Lexer::LexComment() {
  if (pos_ >= src_.size()) return absl::OkStatus();  // jinja2 accepts a "{#" that ends the template
  for (size_t p = pos_; p < src_.size(); ++p) {
    size_t end = 0;
    if (At(p, "+#}")) {
      end = p + 3;
    } else if (At(p, "-#}")) {
      end = p + 3 + SpaceRun(p + 3);
    } else if (At(p, "#}")) {
      end = p + 2 + (At(p + 2, "\n") ? 1 : 0);
    }
    if (end == 0) continue;
    pos_ = end;
    line_starting_ = src_[end - 1] == '\n';
    return absl::OkStatus();
  }
  return Error(pos_, "missing end of comment tag (#})");
}

bool Lexer::MatchTagEnd(bool block) {
  size_t end = 0;
  if (block) {
    if (At(pos_, "+%}")) {
      end = pos_ + 3;
    } else if (At(pos_, "-%}")) {
      end = pos_ + 3 + SpaceRun(pos_ + 3);
    } else if (At(pos_, "%}")) {
      end = pos_ + 2 + (At(pos_ + 2, "\n") ? 1 : 0);  // trim_blocks
    }
  } else if (At(pos_, "-}}")) {
    end = pos_ + 3 + SpaceRun(pos_ + 3);
  } else if (At(pos_, "}}")) {
    end = pos_ + 2;
  }
  if (end == 0) return false;
  tokens_.push_back(Make(block ? TokenKind::kBlockEnd : TokenKind::kVariableEnd, pos_));
  pos_ = end;
  line_starting_ = src_[end - 1] == '\n';
  return true;
}

absl::Status Lexer::LexTag(bool block) {
  tokens_.push_back(Make(block ? TokenKind::kBlockBegin : TokenKind::kVariableBegin, pos_));
  balance_.clear();
  while (pos_ < src_.size()) {
    if (balance_.empty() && MatchTagEnd(block)) return absl::OkStatus();
    if (const size_t ws = SpaceRun(pos_); ws > 0) {
      pos_ += ws;
      line_starting_ = src_[pos_ - 1] == '\n';
      continue;
    }
    line_starting_ = false;
    Token token = Make(TokenKind::kEof, pos_);
    absl::StatusOr<size_t> number = MatchNumber(pos_, &token);
    if (!number.ok()) return number.status();
    size_t length = *number;
    if (length == 0 && IsNameStart(src_[pos_])) {
      length = 1;
      while (pos_ + length < src_.size() && IsNameChar(src_[pos_ + length])) ++length;
      token.kind = TokenKind::kName;
      token.text = src_.substr(pos_, length);
    }
    if (length == 0 && (src_[pos_] == '\'' || src_[pos_] == '"')) {
      absl::StatusOr<size_t> n = MatchString(pos_, &token);
      if (!n.ok()) return n.status();
      length = *n;
    }
    if (length == 0) {
      if (absl::Status s = MatchOperator(pos_, &token, &length); !s.ok()) return s;
    }
    tokens_.push_back(std::move(token));
    pos_ += length;
  }
  return absl::OkStatus();  // the parser reports the unexpected end
}

// `(\d+_)*\d+` at pos: the end of the match, or 0.
size_t Lexer::DigitGroup(size_t pos) const {
  if (pos >= src_.size() || !IsDigitChar(src_[pos])) return 0;
  size_t p = pos;
  while (true) {
    while (p < src_.size() && IsDigitChar(src_[p])) ++p;
    if (p + 1 < src_.size() && src_[p] == '_' && IsDigitChar(src_[p + 1])) {
      ++p;
      continue;
    }
    return p;
  }
}

// `e[+\-]?(\d+_)*\d+` at pos: the end of the match, or 0.
size_t Lexer::Exponent(size_t pos) const {
  if (pos >= src_.size() || (src_[pos] != 'e' && src_[pos] != 'E')) return 0;
  size_t p = pos + 1;
  if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
  return DigitGroup(p);
}

// jinja2's float_re, then integer_re; 0 when neither matches.
absl::StatusOr<size_t> Lexer::MatchNumber(size_t pos, Token* token) const {
  const size_t digits = DigitGroup(pos);
  if (digits == 0) return 0;
  size_t end = 0;
  if (pos == 0 || src_[pos - 1] != '.') {
    const size_t fraction = src_[digits] == '.' ? DigitGroup(digits + 1) : 0;
    if (fraction != 0 && Exponent(fraction) != 0) {
      end = Exponent(fraction);
    } else if (Exponent(digits) != 0) {
      end = Exponent(digits);
    } else {
      end = fraction;
    }
  }
  if (end != 0) {
    std::string text;
    for (size_t i = pos; i < end; ++i) {
      if (src_[i] != '_') text.push_back(src_[i]);
    }
    token->kind = TokenKind::kFloat;
    token->float_value = std::strtod(text.c_str(), nullptr);
    return end - pos;
  }
  int base = 10;
  size_t p = pos;
  const char prefix = pos + 1 < src_.size() && src_[pos] == '0' ? (src_[pos + 1] | 0x20) : '\0';
  const auto is_base_digit = [&](char c, int b) {
    if (b == 2) return c == '0' || c == '1';
    if (b == 8) return c >= '0' && c <= '7';
    if (b == 16) return IsDigitChar(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
    return IsDigitChar(c);
  };
  if (prefix == 'b' || prefix == 'o' || prefix == 'x') {
    const int b = prefix == 'b' ? 2 : (prefix == 'o' ? 8 : 16);
    size_t q = pos + 2;
    while (true) {
      const size_t d = q < src_.size() && src_[q] == '_' ? q + 1 : q;
      if (d >= src_.size() || !is_base_digit(src_[d], b)) break;
      q = d + 1;
    }
    if (q > pos + 2) base = b, p = q;
  }
  if (base == 10) {  // [1-9](_?\d)* or 0(_?0)*
    const char first = src_[pos];
    p = pos + 1;
    while (true) {
      const size_t d = p < src_.size() && src_[p] == '_' ? p + 1 : p;
      if (d >= src_.size() || !(first == '0' ? src_[d] == '0' : IsDigitChar(src_[d]))) break;
      p = d + 1;
    }
  }
  uint64_t value = 0;
  for (size_t i = pos + (base == 10 ? 0 : 2); i < p; ++i) {
    const char c = src_[i];
    if (c == '_') continue;
    const int d = IsDigitChar(c) ? c - '0' : (c | 0x20) - 'a' + 10;
    if (value > (static_cast<uint64_t>(INT64_MAX) - d) / base) {
      return Error(pos, "integer literal is too large (beyond 64 bits)");
    }
    value = value * base + d;
  }
  token->kind = TokenKind::kInteger;
  token->int_value = static_cast<int64_t>(value);
  return p - pos;
}

absl::StatusOr<size_t> Lexer::MatchString(size_t pos, Token* token) const {
  const char quote = src_[pos];
  size_t p = pos + 1;
  while (p < src_.size() && src_[p] != quote) p += src_[p] == '\\' ? 2 : 1;
  if (p >= src_.size()) return Error(pos, "unterminated string literal");
  token->kind = TokenKind::kString;
  if (absl::Status s = Unescape(pos, std::string_view(src_).substr(pos + 1, p - pos - 1), &token->text);
      !s.ok()) {
    return s;
  }
  return p + 1 - pos;
}

// Python's unicode-escape decoding of a literal's body, as jinja2 applies it.
absl::Status Lexer::Unescape(size_t pos, std::string_view body, std::string* out) const {
  size_t i = 0;
  while (i < body.size()) {
    if (body[i] != '\\') {
      const size_t start = i;
      text::DecodeAt(body, &i);
      out->append(body.substr(start, i - start));
      continue;
    }
    const char c = body[i + 1];  // the lexer guarantees a character after '\\'
    i += 2;
    char32_t cp = 0;
    switch (c) {
      case '\n': continue;  // line continuation
      case '\\': out->push_back('\\'); continue;
      case '\'': out->push_back('\''); continue;
      case '"': out->push_back('"'); continue;
      case 'a': out->push_back('\a'); continue;
      case 'b': out->push_back('\b'); continue;
      case 'f': out->push_back('\f'); continue;
      case 'n': out->push_back('\n'); continue;
      case 'r': out->push_back('\r'); continue;
      case 't': out->push_back('\t'); continue;
      case 'v': out->push_back('\v'); continue;
      case 'x':
      case 'u':
      case 'U': {
        const int n = c == 'x' ? 2 : (c == 'u' ? 4 : 8);
        if (!ReadHex(body, i, n, &cp)) {
          return Error(pos, absl::StrCat("truncated \\", std::string(1, c), " escape in a string literal"));
        }
        i += n;
        if (cp > 0x10FFFF) return Error(pos, "illegal Unicode character escape in a string literal");
        if (cp >= 0xD800 && cp <= 0xDFFF) {
          return Error(pos, "surrogate code point escapes are not supported in string literals");
        }
        text::AppendUtf8(cp, out);
        continue;
      }
      case 'N': return Error(pos, "\\N{...} escapes are not supported in string literals");
      default: break;
    }
    if (c >= '0' && c <= '7') {
      cp = c - '0';
      for (int k = 0; k < 2 && i < body.size() && body[i] >= '0' && body[i] <= '7'; ++k, ++i) {
        cp = cp * 8 + (body[i] - '0');
      }
      text::AppendUtf8(cp, out);
      continue;
    }
    out->push_back('\\');
    if (static_cast<unsigned char>(c) < 0x80) {
      out->push_back(c);
      continue;
    }
    // Python escapes the non-ASCII character first (backslashreplace), so
    // the backslash keeps that escape's text.
    size_t p = i - 1;
    cp = text::DecodeAt(body, &p);
    i = p;
    char buf[16];
    std::snprintf(buf, sizeof buf, cp <= 0xFF ? "x%02x" : (cp <= 0xFFFF ? "u%04x" : "U%08x"),
                  static_cast<unsigned>(cp));
    out->append(buf);
  }
  return absl::OkStatus();
}

absl::Status Lexer::MatchOperator(size_t pos, Token* token, size_t* length) {
  static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
  static constexpr std::string_view kOne = "+-/*%~[](){}><=.:|,;";
  token->kind = TokenKind::kOperator;
  for (std::string_view op : kTwo) {
    if (At(pos, op)) {
      token->text = std::string(op);
      *length = 2;
      return absl::OkStatus();
    }
  }
  const char c = src_[pos];
  if (kOne.find(c) == std::string_view::npos) {
    size_t p = pos;
    std::string ch;
    text::AppendUtf8(text::DecodeAt(src_, &p), &ch);
    return Error(pos, absl::StrCat("unexpected character '", ch, "' in a tag"));
  }
  if (c == '{' || c == '(' || c == '[') {
    if (balance_.size() >= 1000) return Error(pos, "brackets nested too deeply");
    balance_.push_back(c == '{' ? '}' : (c == '(' ? ')' : ']'));
  } else if (c == '}' || c == ')' || c == ']') {
    if (balance_.empty()) return Error(pos, absl::StrCat("unexpected '", std::string(1, c), "'"));
    if (balance_.back() != c) {
      return Error(pos, absl::StrCat("unexpected '", std::string(1, c), "', expected '",
                                     std::string(1, balance_.back()), "'"));
    }
    balance_.pop_back();
  }
  token->text = std::string(1, c);
  *length = 1;
  return absl::OkStatus();
}

}  // namespace

std::string PositionedError(int line, int column, absl::string_view what) {
  return absl::StrCat("chat template line ", line, ", column ", column, ": ", std::string(what));
}

std::string LineError(int line, absl::string_view what) {
  return absl::StrCat("chat template line ", line, ": ", std::string(what));
}

absl::StatusOr<std::vector<Token>> TemplateLexer::Tokenize(std::string_view source) {
  if (const size_t bad = text::FindInvalidUtf8(source); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template is not valid UTF-8 (byte offset ", bad, ")"));
  }
  Lexer lexer{Normalize(source)};
  return lexer.Run();
}

}  // namespace adapterd::tmpl
