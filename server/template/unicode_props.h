// Unicode character properties and case mappings with Python's str
// semantics, from compact tables: full case mappings (ß -> SS, ligatures,
// titlecase digraphs, İ, final sigma) for Latin, Greek, Cyrillic, Armenian,
// Georgian, Coptic and fullwidth letters; letters and numbers (`\w`,
// isalpha) by script ranges. Other scripts' case mappings, and the
// letter/mark distinction inside Brahmic scripts, are approximations.
// Pure functions; thread-safe.
#ifndef ADAPTERD_SERVER_TEMPLATE_UNICODE_PROPS_H_
#define ADAPTERD_SERVER_TEMPLATE_UNICODE_PROPS_H_

#include <string>
#include <string_view>

namespace adapterd::tmpl::text {

char32_t SimpleLower(char32_t c);
char32_t SimpleUpper(char32_t c);
bool IsTitlecase(char32_t c);
// Python's cased / case-ignorable properties (used by title and sigma).
bool IsCased(char32_t c);
bool IsCaseIgnorable(char32_t c);
// Letters (Python isalpha) and numbers (isnumeric); `\w` is either or "_".
bool IsLetter(char32_t c);
bool IsNumber(char32_t c);

// Full mappings, appended as UTF-8.
void AppendUpperFull(char32_t c, std::string* out);
void AppendTitleFull(char32_t c, std::string* out);
// The lower case of s[i], which depends on its neighbours for capital sigma.
void AppendLowerFull(std::u32string_view s, size_t i, std::string* out);

}  // namespace adapterd::tmpl::text

#endif  // ADAPTERD_SERVER_TEMPLATE_UNICODE_PROPS_H_
