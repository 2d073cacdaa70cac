// UTF-8 helpers with Python's str semantics, used by the template engine:
// code point counting and slicing, whitespace, case mapping and printability.
//
// Every function is a pure function of its arguments and thread-safe. Inputs
// are expected to be valid UTF-8 (ChatTemplate validates its source and its
// context); an invalid byte decodes as U+FFFD and never reads out of bounds.
// Character properties and case mappings come from unicode_props.h.
#ifndef ADAPTERD_SERVER_TEMPLATE_TEXT_UTIL_H_
#define ADAPTERD_SERVER_TEMPLATE_TEXT_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace adapterd::tmpl::text {

// Decodes the code point starting at s[*pos] and advances *pos past it.
char32_t DecodeAt(std::string_view s, size_t* pos);
void AppendUtf8(char32_t cp, std::string* out);
// The byte offset of the first invalid sequence, or npos when `s` is valid
// UTF-8 (surrogates and overlong forms are invalid, as in Python).
size_t FindInvalidUtf8(std::string_view s);
std::u32string Decode(std::string_view s);
std::string Encode(std::u32string_view s);
bool IsAscii(std::string_view s);
size_t CodePointCount(std::string_view s);

// Python str.isspace() for one code point (also what `\s` matches).
bool IsSpace(char32_t c);
// Python str.isprintable() for one code point, approximated by ranges.
bool IsPrintable(char32_t c);
bool IsAlpha(char32_t c);
// Python str.isalnum(); with '_' also what `\w` matches.
bool IsAlnum(char32_t c);
bool IsDigit(char32_t c);
bool IsUpper(char32_t c);
bool IsLower(char32_t c);

// Python str.islower() and str.isupper().
bool PyIsLower(std::string_view s);
bool PyIsUpper(std::string_view s);

// Python str.upper(), str.lower(), str.capitalize(), str.title().
std::string Upper(std::string_view s);
std::string Lower(std::string_view s);
std::string Capitalize(std::string_view s);
std::string PyTitle(std::string_view s);

// Python str.strip/lstrip/rstrip: `chars` null strips whitespace.
std::string Strip(std::string_view s, const std::string* chars, bool left, bool right);
// Python str.split(sep=None, maxsplit) on whitespace runs.
std::vector<std::string> SplitWhitespace(std::string_view s, int64_t maxsplit);
// Python str.split(sep, maxsplit); `sep` must not be empty.
std::vector<std::string> Split(std::string_view s, std::string_view sep, int64_t maxsplit);
// Python str.rsplit(sep, maxsplit); `sep` must not be empty.
std::vector<std::string> RSplit(std::string_view s, std::string_view sep, int64_t maxsplit);
// s.find(needle, from) in time linear in the sizes, whatever the input.
size_t Find(std::string_view s, std::string_view needle, size_t from);
// Non-overlapping occurrences of a non-empty `needle`, at most `limit` (< 0: all).
int64_t CountMatches(std::string_view s, std::string_view needle, int64_t limit);
// Python str.replace(old, new, count); count < 0 replaces all.
std::string Replace(std::string_view s, std::string_view old_text, std::string_view new_text,
                    int64_t count);
// Python str.splitlines() (without keepends).
std::vector<std::string> SplitLines(std::string_view s);

}  // namespace adapterd::tmpl::text

#endif  // ADAPTERD_SERVER_TEMPLATE_TEXT_UTIL_H_
