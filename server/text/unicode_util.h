// UTF-8 and Unicode helpers shared by the tokenizer components: validation,
// code point iteration, Unicode normalization (through utf8proc), case
// mapping, character classes, and Rust-compatible lossy UTF-8 decoding.
#ifndef ADAPTERD_SERVER_TEXT_UNICODE_UTIL_H_
#define ADAPTERD_SERVER_TEXT_UNICODE_UTIL_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace adapterd::text {

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

// The byte offset of the first byte that does not start a well-formed UTF-8
// sequence (surrogates and overlong forms are ill-formed), or nullopt.
std::optional<size_t> FindInvalidUtf8(std::string_view s);

// Decodes the code point at `*pos` of well-formed UTF-8 and advances `*pos`.
char32_t NextCodePoint(std::string_view s, size_t* pos);
// Length in bytes of the UTF-8 sequence that starts with `lead`.
size_t Utf8SequenceLength(unsigned char lead);
void AppendUtf8(std::string* out, char32_t cp);

// Character classes with the meaning of Rust's `char` methods, which the
// reference tokenizers use. IsAlphanumeric approximates Alphabetic by the
// letter, mark and letter-number categories.
bool IsWhitespace(char32_t cp);
bool IsNumeric(char32_t cp);
bool IsAlphanumeric(char32_t cp);
bool IsPunctuation(char32_t cp);

// Normalizes well-formed UTF-8 text.
std::string Normalize(std::string_view s, NormalForm form);
// Lowercases every code point (Rust's char::to_lowercase, unconditional
// mappings).
std::string ToLower(std::string_view s);

// Appends `bytes` decoded as UTF-8, each maximal ill-formed subpart replaced
// by U+FFFD (Rust's String::from_utf8_lossy).
void AppendLossyUtf8(std::string* out, std::string_view bytes);
// The length of the longest suffix of `bytes` that is a proper prefix of a
// well-formed UTF-8 sequence (0 to 3): bytes that a later byte may complete.
size_t IncompleteUtf8Suffix(std::string_view bytes);

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_UNICODE_UTIL_H_
