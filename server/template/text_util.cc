#include "server/template/text_util.h"

#include <algorithm>

#include "server/template/unicode_props.h"

namespace adapterd::tmpl::text {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

// Length of a valid sequence starting at s[pos], or 0 when it is invalid.
size_t ValidSequenceLength(std::string_view s, size_t pos) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(pos);
  if (c < 0x80) return 1;
  size_t n;
  char32_t cp, min;
  if ((c & 0xE0) == 0xC0) {
    n = 2, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, cp = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (pos + n > s.size()) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((b(pos + i) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(pos + i) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

bool InRanges(char32_t c, const char32_t (*ranges)[2], size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (c >= ranges[i][0] && c <= ranges[i][1]) return true;
  }
  return false;
}

}  // namespace

size_t Find(std::string_view s, std::string_view needle, size_t from) {
  if (from > s.size()) return std::string_view::npos;
  if (needle.size() <= 16) return s.find(needle, from);
  // Knuth-Morris-Pratt keeps long needles linear.
  std::vector<size_t> fail(needle.size(), 0);
  for (size_t i = 1, k = 0; i < needle.size(); ++i) {
    while (k > 0 && needle[i] != needle[k]) k = fail[k - 1];
    if (needle[i] == needle[k]) ++k;
    fail[i] = k;
  }
  for (size_t i = from, k = 0; i < s.size(); ++i) {
    while (k > 0 && s[i] != needle[k]) k = fail[k - 1];
    if (s[i] == needle[k]) ++k;
    if (k == needle.size()) return i + 1 - k;
  }
  return std::string_view::npos;
}

int64_t CountMatches(std::string_view s, std::string_view needle, int64_t limit) {
  int64_t n = 0;
  size_t pos = 0;
  while (limit < 0 || n < limit) {
    const size_t hit = Find(s, needle, pos);
    if (hit == std::string_view::npos) break;
    ++n;
    pos = hit + needle.size();
  }
  return n;
}

char32_t DecodeAt(std::string_view s, size_t* pos) {
  const size_t n = ValidSequenceLength(s, *pos);
  if (n == 0) {
    ++*pos;
    return kReplacement;
  }
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[*pos + i]); };
  char32_t cp;
  switch (n) {
    case 1: cp = b(0); break;
    case 2: cp = ((b(0) & 0x1F) << 6) | (b(1) & 0x3F); break;
    case 3: cp = ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F); break;
    default:
      cp = ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
  *pos += n;
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = kReplacement;
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t FindInvalidUtf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t n = ValidSequenceLength(s, pos);
    if (n == 0) return pos;
    pos += n;
  }
  return std::string_view::npos;
}

std::u32string Decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) out.push_back(DecodeAt(s, &pos));
  return out;
}

std::string Encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) AppendUtf8(c, &out);
  return out;
}

bool IsAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

size_t CodePointCount(std::string_view s) {
  size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

bool IsSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

bool IsPrintable(char32_t c) {
  static constexpr char32_t kNonPrintable[][2] = {
      {0x00, 0x1F},       {0x7F, 0xA0},       {0xAD, 0xAD},       {0x600, 0x605},
      {0x61C, 0x61C},     {0x6DD, 0x6DD},     {0x70F, 0x70F},     {0x1680, 0x1680},
      {0x180E, 0x180E},   {0x2000, 0x200F},   {0x2028, 0x202F},   {0x205F, 0x2064},
      {0x2066, 0x206F},   {0x3000, 0x3000},   {0xD800, 0xF8FF},   {0xFEFF, 0xFEFF},
      {0xFFF9, 0xFFFB},   {0xFFFE, 0xFFFF},   {0x110BD, 0x110BD}, {0x1BCA0, 0x1BCA3},
      {0x1D173, 0x1D17A}, {0xE0000, 0x10FFFF},
  };
  return !InRanges(c, kNonPrintable, sizeof(kNonPrintable) / sizeof(kNonPrintable[0]));
}

bool IsAlpha(char32_t c) { return IsLetter(c); }

bool IsAlnum(char32_t c) { return IsLetter(c) || IsNumber(c); }

bool IsDigit(char32_t c) {
  return (c >= '0' && c <= '9') || c == 0xB2 || c == 0xB3 || c == 0xB9 || c == 0x2070 ||
         (c >= 0x2074 && c <= 0x2079) || (c >= 0x2080 && c <= 0x2089) || (c >= 0x660 && c <= 0x669) ||
         (c >= 0x6F0 && c <= 0x6F9) || (c >= 0x966 && c <= 0x96F) || (c >= 0xFF10 && c <= 0xFF19);
}

bool IsUpper(char32_t c) { return SimpleLower(c) != c && !IsTitlecase(c); }

bool IsLower(char32_t c) {
  if (IsTitlecase(c)) return false;
  return SimpleUpper(c) != c || (IsCased(c) && SimpleLower(c) == c);
}

bool PyIsLower(std::string_view s) {
  bool cased = false;
  size_t pos = 0;
  while (pos < s.size()) {
    const char32_t c = DecodeAt(s, &pos);
    if (IsUpper(c) || IsTitlecase(c)) return false;
    cased = cased || IsLower(c);
  }
  return cased;
}

bool PyIsUpper(std::string_view s) {
  bool cased = false;
  size_t pos = 0;
  while (pos < s.size()) {
    const char32_t c = DecodeAt(s, &pos);
    if (IsLower(c) || IsTitlecase(c)) return false;
    cased = cased || IsUpper(c);
  }
  return cased;
}

std::string Upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) AppendUpperFull(DecodeAt(s, &pos), &out);
  return out;
}

std::string Lower(std::string_view s) {
  if (IsAscii(s)) {
    std::string out(s);
    for (char& c : out) {
      if (c >= 'A' && c <= 'Z') c += 32;
    }
    return out;
  }
  const std::u32string u = Decode(s);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < u.size(); ++i) AppendLowerFull(u, i, &out);
  return out;
}

std::string Capitalize(std::string_view s) {
  const std::u32string u = Decode(s);
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < u.size(); ++i) {
    if (i == 0) {
      AppendTitleFull(u[0], &out);
    } else {
      AppendLowerFull(u, i, &out);
    }
  }
  return out;
}

std::string PyTitle(std::string_view s) {
  const std::u32string u = Decode(s);
  std::string out;
  out.reserve(s.size());
  bool previous_cased = false;
  for (size_t i = 0; i < u.size(); ++i) {
    if (previous_cased) {
      AppendLowerFull(u, i, &out);
    } else {
      AppendTitleFull(u[i], &out);
    }
    previous_cased = IsCased(u[i]);
  }
  return out;
}

std::string Strip(std::string_view s, const std::string* chars, bool left, bool right) {
  std::u32string cs = chars ? Decode(*chars) : std::u32string();
  std::sort(cs.begin(), cs.end());
  const auto strip_this = [&](char32_t c) {
    return chars ? std::binary_search(cs.begin(), cs.end(), c) : IsSpace(c);
  };
  size_t begin = 0, end = s.size();
  if (left) {
    while (begin < end) {
      size_t next = begin;
      if (!strip_this(DecodeAt(s, &next))) break;
      begin = next;
    }
  }
  if (right) {
    while (end > begin) {
      size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      size_t p = start;
      if (!strip_this(DecodeAt(s, &p))) break;
      end = start;
    }
  }
  return std::string(s.substr(begin, end - begin));
}

std::vector<std::string> SplitWhitespace(std::string_view s, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t word = pos;  // skip whitespace
    while (word < s.size()) {
      size_t next = word;
      if (!IsSpace(DecodeAt(s, &next))) break;
      word = next;
    }
    if (word >= s.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
      out.push_back(std::string(Strip(s.substr(word), nullptr, false, true)));
      return out;
    }
    size_t end = word;
    while (end < s.size()) {
      size_t next = end;
      if (IsSpace(DecodeAt(s, &next))) break;
      end = next;
    }
    out.emplace_back(s.substr(word, end - word));
    pos = end;
  }
  return out;
}

std::vector<std::string> Split(std::string_view s, std::string_view sep, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    const size_t hit = Find(s, sep, pos);
    if (hit == std::string_view::npos) break;
    out.emplace_back(s.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
  out.emplace_back(s.substr(pos));
  return out;
}

std::vector<std::string> RSplit(std::string_view s, std::string_view sep, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t end = s.size();
  int64_t splits = 0;
  while (maxsplit < 0 || splits < maxsplit) {
    if (end < sep.size()) break;
    const size_t hit = s.rfind(sep, end - sep.size());
    if (hit == std::string_view::npos) break;
    out.emplace_back(s.substr(hit + sep.size(), end - hit - sep.size()));
    end = hit;
    ++splits;
  }
  out.emplace_back(s.substr(0, end));
  return std::vector<std::string>(out.rbegin(), out.rend());
}

std::string Replace(std::string_view s, std::string_view old_text, std::string_view new_text,
                    int64_t count) {
  std::string out;
  int64_t done = 0;
  if (old_text.empty()) {  // inserts `new_text` around every code point
    size_t pos = 0;
    while (true) {
      if (count >= 0 && done >= count) break;
      out.append(new_text);
      ++done;
      if (pos >= s.size()) return out;
      const size_t start = pos;
      DecodeAt(s, &pos);
      out.append(s.substr(start, pos - start));
    }
    out.append(s.substr(pos));
    return out;
  }
  size_t pos = 0;
  while (count < 0 || done < count) {
    const size_t hit = Find(s, old_text, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(new_text);
    pos = hit + old_text.size();
    ++done;
  }
  out.append(s.substr(pos));
  return out;
}

std::vector<std::string> SplitLines(std::string_view s) {
  std::vector<std::string> out;
  size_t pos = 0, line = 0;
  while (pos < s.size()) {
    const size_t start = pos;
    const char32_t c = DecodeAt(s, &pos);
    const bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
                     c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) continue;
    out.emplace_back(s.substr(line, start - line));
    if (c == '\r' && pos < s.size() && s[pos] == '\n') ++pos;
    line = pos;
  }
  if (line < s.size()) out.emplace_back(s.substr(line));
  return out;
}

}  // namespace adapterd::tmpl::text
