// A cursor over the tokens of one template, shared by the expression and
// statement parsers while a template is parsed. Not thread-safe; lives only
// during TemplateParser::Parse.
#ifndef ADAPTERD_SERVER_TEMPLATE_TOKEN_STREAM_H_
#define ADAPTERD_SERVER_TEMPLATE_TOKEN_STREAM_H_

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "server/template/template_lexer.h"

namespace adapterd::tmpl {

class TokenStream {
 public:
  // `tokens` must end with a kEof token.
  explicit TokenStream(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  const Token& Current() const { return tokens_[index_]; }
  // The token `n` places ahead (kEof past the end).
  const Token& Look(size_t n = 1) const {
    return tokens_[std::min(index_ + n, tokens_.size() - 1)];
  }
  const Token& Next() {
    const Token& t = tokens_[index_];
    if (index_ + 1 < tokens_.size()) ++index_;
    return t;
  }

  bool IsName(std::string_view name) const { return IsName(Current(), name); }
  bool IsOp(std::string_view op) const { return IsOp(Current(), op); }
  static bool IsName(const Token& t, std::string_view name) {
    return t.kind == TokenKind::kName && t.text == name;
  }
  static bool IsOp(const Token& t, std::string_view op) {
    return t.kind == TokenKind::kOperator && t.text == op;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }

  // INVALID_ARGUMENT at the current token: "chat template line L, column C: what".
  absl::Status Error(absl::string_view what) const { return ErrorAt(Current(), what); }
  static absl::Status ErrorAt(const Token& t, absl::string_view what) {
    return absl::InvalidArgumentError(PositionedError(t.line, t.column, what));
  }
  // How the current token reads in an error message.
  std::string Describe() const { return Describe(Current()); }
  static std::string Describe(const Token& t);

  absl::Status ExpectOp(std::string_view op);
  absl::StatusOr<std::string> ExpectName();
  absl::Status Expect(TokenKind kind);

 private:
  std::vector<Token> tokens_;
  size_t index_ = 0;
};

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_TOKEN_STREAM_H_
