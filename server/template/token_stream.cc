#include "server/template/token_stream.h"

#include "absl/strings/str_cat.h"
#include "server/template/value_format.h"

namespace adapterd::tmpl {

std::string TokenStream::Describe(const Token& t) {
  switch (t.kind) {
    case TokenKind::kData: return "template text";
    case TokenKind::kBlockBegin: return "\"{%\"";
    case TokenKind::kBlockEnd: return "end of statement \"%}\"";
    case TokenKind::kVariableBegin: return "\"{{\"";
    case TokenKind::kVariableEnd: return "end of expression \"}}\"";
    case TokenKind::kName:
    case TokenKind::kOperator: return absl::StrCat("\"", t.text, "\"");
    case TokenKind::kString: return absl::StrCat("string ", StringRepr(t.text));
    case TokenKind::kInteger: return absl::StrCat("integer ", t.int_value);
    case TokenKind::kFloat: return absl::StrCat("number ", FloatRepr(t.float_value));
    case TokenKind::kEof: return "end of template";
  }
  return "token";
}

absl::Status TokenStream::ExpectOp(std::string_view op) {
  if (!IsOp(op)) return Error(absl::StrCat("expected \"", std::string(op), "\", got ", Describe()));
  Next();
  return absl::OkStatus();
}

absl::StatusOr<std::string> TokenStream::ExpectName() {
  if (Current().kind != TokenKind::kName) return Error(absl::StrCat("expected a name, got ", Describe()));
  return Next().text;
}

absl::Status TokenStream::Expect(TokenKind kind) {
  if (Current().kind == kind) {
    Next();
    return absl::OkStatus();
  }
  Token want;
  want.kind = kind;
  return Error(absl::StrCat("expected ", Describe(want), ", got ", Describe()));
}

}  // namespace adapterd::tmpl
