// Splits chat template source into tokens the way jinja2's lexer does for
// transformers' environment (trim_blocks and lstrip_blocks on, default
// delimiters): template text, tag delimiters and the expression tokens inside
// them. Whitespace control (`{%-`, `-%}`, `{%+`, trim_blocks, lstrip_blocks) is
// applied here, so the parser sees final text. Comments are dropped and
// `{% raw %}` bodies become text.
//
// Stateless; Tokenize is thread-safe.
#ifndef ADAPTERD_SERVER_TEMPLATE_TEMPLATE_LEXER_H_
#define ADAPTERD_SERVER_TEMPLATE_TEMPLATE_LEXER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace adapterd::tmpl {

enum class TokenKind {
  kData,           // template text (text = the text)
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kName,           // identifier or keyword (text)
  kString,         // string literal (text = the unescaped value)
  kInteger,        // int_value
  kFloat,          // float_value
  kOperator,       // text = the operator, e.g. "//" or "("
  kEof,
};

struct Token {
  TokenKind kind = TokenKind::kEof;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
  int column = 1;
};

class TemplateLexer {
 public:
  // Tokens ending with kEof, or INVALID_ARGUMENT naming the line and column
  // (an unterminated comment, an unexpected character, a bad escape...).
  static absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source);
};

// Error text for `what` at a position: "chat template line L, column C: what".
std::string PositionedError(int line, int column, absl::string_view what);
// "chat template line L: what".
std::string LineError(int line, absl::string_view what);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_TEMPLATE_LEXER_H_
