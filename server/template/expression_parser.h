// Parses jinja2 expressions from a TokenStream with jinja2's grammar and
// precedence (conditional expressions, or/and/not, comparisons, + - ~ * / //
// % **, unary signs, filters, tests, calls, attributes, subscripts, slices and
// literals). Filters and tests outside the supported subset, argument
// unpacking and nesting beyond kMaxNesting are rejected with the line and
// column. Not thread-safe; used only while one template is parsed.
#ifndef ADAPTERD_SERVER_TEMPLATE_EXPRESSION_PARSER_H_
#define ADAPTERD_SERVER_TEMPLATE_EXPRESSION_PARSER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/template/template_ast.h"
#include "server/template/token_stream.h"

namespace adapterd::tmpl {

class ExpressionParser {
 public:
  // How deeply expressions may nest (parentheses, operators, filter chains).
  static constexpr int kMaxNesting = 100;

  explicit ExpressionParser(TokenStream* tokens) : t_(*tokens) {}

  // jinja2's parse_expression.
  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr = true);
  // jinja2's parse_tuple: one expression, or a tuple when commas follow.
  // `extra_end` names a keyword that also ends the tuple (e.g. "in").
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr = true, const char* extra_end = nullptr,
                                     bool explicit_parens = false);
  // Names that `set` or `for` assign: `a`, `a, b` or `(a, b)`.
  absl::StatusOr<std::vector<std::string>> ParseAssignTargets(const char* extra_end);

  // While set, a Name node for varargs/kwargs/caller is an error (macros).
  void set_in_macro(bool in_macro) { in_macro_ = in_macro; }

 private:
  ExprPtr Node(Expr::Kind kind, const Token& at) const;
  absl::Status Seal(Expr* e) const;
  absl::StatusOr<ExprPtr> ParseCondExpr();
  absl::StatusOr<ExprPtr> ParseOr();
  absl::StatusOr<ExprPtr> ParseAnd();
  absl::StatusOr<ExprPtr> ParseNot();
  absl::StatusOr<ExprPtr> ParseCompare();
  absl::StatusOr<ExprPtr> ParseMath1();
  absl::StatusOr<ExprPtr> ParseConcat();
  absl::StatusOr<ExprPtr> ParseMath2();
  absl::StatusOr<ExprPtr> ParsePow();
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter);
  absl::StatusOr<ExprPtr> ParsePrimary();
  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseSubscribed();
  absl::StatusOr<ExprPtr> ParseList();
  absl::StatusOr<ExprPtr> ParseDict();
  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node);
  absl::Status ParseCallArgs(Expr* call);
  absl::StatusOr<std::string> ParseDottedName();
  // A binary node over `left` and the next operand.
  absl::StatusOr<ExprPtr> Binary(const Token& op, ExprPtr left, ExprPtr right);

  TokenStream& t_;
  int nesting_ = 0;
  bool in_macro_ = false;
};

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_EXPRESSION_PARSER_H_
