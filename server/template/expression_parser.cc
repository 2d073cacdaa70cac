#include "server/template/expression_parser.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/template/template_filters.h"
#include "server/template/template_tests.h"

namespace adapterd::tmpl {
namespace {

// Counts recursion in the parser; Enter fails past kMaxNesting.
class NestingGuard {
 public:
  explicit NestingGuard(int* nesting) : nesting_(nesting) { ++*nesting_; }
  ~NestingGuard() { --*nesting_; }
  bool TooDeep() const { return *nesting_ > ExpressionParser::kMaxNesting; }

 private:
  int* nesting_;
};

bool IsReservedConstant(std::string_view name) {
  return name == "true" || name == "false" || name == "none" || name == "True" || name == "False" ||
         name == "None";
}

}  // namespace

ExprPtr ExpressionParser::Node(Expr::Kind kind, const Token& at) const {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = at.line;
  e->column = at.column;
  return e;
}

absl::Status ExpressionParser::Seal(Expr* e) const {
  int depth = 0;
  for (const ExprPtr& c : e->children) {
    if (c) depth = std::max(depth, c->depth);
  }
  for (const auto& [name, value] : e->kwargs) depth = std::max(depth, value->depth);
  e->depth = depth + 1;
  if (e->depth > kMaxNesting) {
    return absl::InvalidArgumentError(PositionedError(
        e->line, e->column, absl::StrCat("expression nested more than ", kMaxNesting, " levels deep")));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExprPtr> ExpressionParser::Binary(const Token& op, ExprPtr left, ExprPtr right) {
  ExprPtr node = Node(Expr::Kind::kBinary, op);
  node->name = op.text;
  node->children.push_back(std::move(left));
  node->children.push_back(std::move(right));
  if (absl::Status s = Seal(node.get()); !s.ok()) return s;
  return node;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseExpression(bool with_condexpr) {
  NestingGuard guard(&nesting_);
  if (guard.TooDeep()) {
    return t_.Error(absl::StrCat("expression nested more than ", kMaxNesting, " levels deep"));
  }
  return with_condexpr ? ParseCondExpr() : ParseOr();
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseCondExpr() {
  absl::StatusOr<ExprPtr> expr1 = ParseOr();
  if (!expr1.ok()) return expr1;
  ExprPtr result = std::move(*expr1);
  while (t_.IsName("if")) {
    const Token at = t_.Next();
    absl::StatusOr<ExprPtr> test = ParseOr();
    if (!test.ok()) return test;
    ExprPtr otherwise;
    if (t_.SkipName("else")) {
      NestingGuard guard(&nesting_);
      if (guard.TooDeep()) return t_.Error("conditional expressions nested too deeply");
      absl::StatusOr<ExprPtr> e = ParseCondExpr();
      if (!e.ok()) return e;
      otherwise = std::move(*e);
    }
    ExprPtr node = Node(Expr::Kind::kCondExpr, at);
    node->children.push_back(std::move(*test));
    node->children.push_back(std::move(result));
    node->children.push_back(std::move(otherwise));
    if (absl::Status s = Seal(node.get()); !s.ok()) return s;
    result = std::move(node);
  }
  return result;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseOr() {
  absl::StatusOr<ExprPtr> left = ParseAnd();
  while (left.ok() && t_.IsName("or")) {
    const Token op = t_.Next();
    absl::StatusOr<ExprPtr> right = ParseAnd();
    if (!right.ok()) return right;
    left = Binary(op, std::move(*left), std::move(*right));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseAnd() {
  absl::StatusOr<ExprPtr> left = ParseNot();
  while (left.ok() && t_.IsName("and")) {
    const Token op = t_.Next();
    absl::StatusOr<ExprPtr> right = ParseNot();
    if (!right.ok()) return right;
    left = Binary(op, std::move(*left), std::move(*right));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseNot() {
  if (!t_.IsName("not")) return ParseCompare();
  const Token at = t_.Next();
  NestingGuard guard(&nesting_);
  if (guard.TooDeep()) return t_.Error("\"not\" nested too deeply");
  absl::StatusOr<ExprPtr> operand = ParseNot();
  if (!operand.ok()) return operand;
  ExprPtr node = Node(Expr::Kind::kUnary, at);
  node->name = "not";
  node->children.push_back(std::move(*operand));
  if (absl::Status s = Seal(node.get()); !s.ok()) return s;
  return node;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseCompare() {
  const Token at = t_.Current();
  absl::StatusOr<ExprPtr> first = ParseMath1();
  if (!first.ok()) return first;
  ExprPtr node;
  while (true) {
    std::string op;
    const Token& cur = t_.Current();
    if (cur.kind == TokenKind::kOperator &&
        (cur.text == "==" || cur.text == "!=" || cur.text == "<" || cur.text == ">" ||
         cur.text == "<=" || cur.text == ">=")) {
      op = t_.Next().text;
    } else if (t_.SkipName("in")) {
      op = "in";
    } else if (t_.IsName("not") && TokenStream::IsName(t_.Look(), "in")) {
      t_.Next();
      t_.Next();
      op = "notin";
    } else {
      break;
    }
    absl::StatusOr<ExprPtr> operand = ParseMath1();
    if (!operand.ok()) return operand;
    if (!node) {
      node = Node(Expr::Kind::kCompare, at);
      node->children.push_back(std::move(*first));
    }
    node->ops.push_back(op);
    node->children.push_back(std::move(*operand));
  }
  if (!node) return first;
  if (absl::Status s = Seal(node.get()); !s.ok()) return s;
  return node;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseMath1() {
  absl::StatusOr<ExprPtr> left = ParseConcat();
  while (left.ok() && (t_.IsOp("+") || t_.IsOp("-"))) {
    const Token op = t_.Next();
    absl::StatusOr<ExprPtr> right = ParseConcat();
    if (!right.ok()) return right;
    left = Binary(op, std::move(*left), std::move(*right));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseConcat() {
  absl::StatusOr<ExprPtr> left = ParseMath2();
  while (left.ok() && t_.IsOp("~")) {
    const Token op = t_.Next();
    absl::StatusOr<ExprPtr> right = ParseMath2();
    if (!right.ok()) return right;
    left = Binary(op, std::move(*left), std::move(*right));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseMath2() {
  absl::StatusOr<ExprPtr> left = ParsePow();
  while (left.ok() && (t_.IsOp("*") || t_.IsOp("/") || t_.IsOp("//") || t_.IsOp("%"))) {
    const Token op = t_.Next();
    absl::StatusOr<ExprPtr> right = ParsePow();
    if (!right.ok()) return right;
    left = Binary(op, std::move(*left), std::move(*right));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParsePow() {
  absl::StatusOr<ExprPtr> left = ParseUnary(true);
  while (left.ok() && t_.IsOp("**")) {
    const Token op = t_.Next();
    absl::StatusOr<ExprPtr> right = ParseUnary(true);
    if (!right.ok()) return right;
    left = Binary(op, std::move(*left), std::move(*right));
  }
  return left;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseUnary(bool with_filter) {
  NestingGuard guard(&nesting_);
  if (guard.TooDeep()) {
    return t_.Error(absl::StrCat("expression nested more than ", kMaxNesting, " levels deep"));
  }
  absl::StatusOr<ExprPtr> node;
  if (t_.IsOp("-") || t_.IsOp("+")) {
    const Token op = t_.Next();
    absl::StatusOr<ExprPtr> operand = ParseUnary(false);
    if (!operand.ok()) return operand;
    ExprPtr unary = Node(Expr::Kind::kUnary, op);
    unary->name = op.text;
    unary->children.push_back(std::move(*operand));
    if (absl::Status s = Seal(unary.get()); !s.ok()) return s;
    node = std::move(unary);
  } else {
    node = ParsePrimary();
  }
  if (!node.ok()) return node;
  node = ParsePostfix(std::move(*node));
  if (node.ok() && with_filter) node = ParseFilterExpr(std::move(*node));
  return node;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParsePrimary() {
  const Token tok = t_.Current();
  ExprPtr node = Node(Expr::Kind::kLiteral, tok);
  switch (tok.kind) {
    case TokenKind::kName:
      t_.Next();
      if (tok.text == "true" || tok.text == "True" || tok.text == "false" || tok.text == "False") {
        node->literal = Value::Bool(tok.text[0] == 't' || tok.text[0] == 'T');
      } else if (tok.text == "none" || tok.text == "None") {
        node->literal = Value::None();
      } else {
        if (in_macro_ && (tok.text == "varargs" || tok.text == "kwargs" || tok.text == "caller")) {
          return TokenStream::ErrorAt(
              tok, absl::StrCat("macros using \"", tok.text, "\" are not supported"));
        }
        node->kind = Expr::Kind::kName;
        node->name = tok.text;
      }
      break;
    case TokenKind::kString: {
      std::string s;
      while (t_.Current().kind == TokenKind::kString) s += t_.Next().text;
      node->literal = Value::String(std::move(s));
      break;
    }
    case TokenKind::kInteger: node->literal = Value::Int(t_.Next().int_value); break;
    case TokenKind::kFloat: node->literal = Value::Float(t_.Next().float_value); break;
    case TokenKind::kOperator:
      if (tok.text == "(") {
        t_.Next();
        absl::StatusOr<ExprPtr> inner = ParseTuple(true, nullptr, true);
        if (!inner.ok()) return inner;
        if (absl::Status s = t_.ExpectOp(")"); !s.ok()) return s;
        return inner;
      }
      if (tok.text == "[") return ParseList();
      if (tok.text == "{") return ParseDict();
      [[fallthrough]];
    default: return t_.Error(absl::StrCat("unexpected ", t_.Describe()));
  }
  return node;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParsePostfix(ExprPtr node) {
  absl::StatusOr<ExprPtr> result = std::move(node);
  while (result.ok()) {
    if (t_.IsOp(".") || t_.IsOp("[")) {
      result = ParseSubscript(std::move(*result));
    } else if (t_.IsOp("(")) {
      ExprPtr call = Node(Expr::Kind::kCall, t_.Current());
      call->children.push_back(std::move(*result));
      if (absl::Status s = ParseCallArgs(call.get()); !s.ok()) return s;
      if (absl::Status s = Seal(call.get()); !s.ok()) return s;
      result = std::move(call);
    } else {
      break;
    }
  }
  return result;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseFilterExpr(ExprPtr node) {
  absl::StatusOr<ExprPtr> result = std::move(node);
  while (result.ok()) {
    if (t_.IsOp("|")) {
      result = ParseFilter(std::move(*result));
    } else if (t_.IsName("is")) {
      result = ParseTest(std::move(*result));
    } else if (t_.IsOp("(")) {
      ExprPtr call = Node(Expr::Kind::kCall, t_.Current());
      call->children.push_back(std::move(*result));
      if (absl::Status s = ParseCallArgs(call.get()); !s.ok()) return s;
      if (absl::Status s = Seal(call.get()); !s.ok()) return s;
      result = std::move(call);
    } else {
      break;
    }
  }
  return result;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseSubscript(ExprPtr node) {
  const Token op = t_.Next();
  if (op.text == ".") {
    const Token attr = t_.Next();
    ExprPtr access;
    if (attr.kind == TokenKind::kName) {
      access = Node(Expr::Kind::kGetAttr, op);
      access->name = attr.text;
      access->children.push_back(std::move(node));
    } else if (attr.kind == TokenKind::kInteger) {
      access = Node(Expr::Kind::kGetItem, op);
      ExprPtr index = Node(Expr::Kind::kLiteral, attr);
      index->literal = Value::Int(attr.int_value);
      access->children.push_back(std::move(node));
      access->children.push_back(std::move(index));
    } else {
      return TokenStream::ErrorAt(attr, absl::StrCat("expected a name or number after \".\", got ",
                                                     TokenStream::Describe(attr)));
    }
    if (absl::Status s = Seal(access.get()); !s.ok()) return s;
    return access;
  }
  std::vector<ExprPtr> args;
  while (!t_.IsOp("]")) {
    if (!args.empty()) {
      if (absl::Status s = t_.ExpectOp(","); !s.ok()) return s;
    }
    absl::StatusOr<ExprPtr> arg = ParseSubscribed();
    if (!arg.ok()) return arg;
    args.push_back(std::move(*arg));
  }
  if (absl::Status s = t_.ExpectOp("]"); !s.ok()) return s;
  ExprPtr access;
  if (args.size() == 1 && args[0]->kind == Expr::Kind::kSlice) {
    access = std::move(args[0]);
    access->children[0] = std::move(node);
  } else {
    access = Node(Expr::Kind::kGetItem, op);
    ExprPtr key;
    if (args.size() == 1) {
      key = std::move(args[0]);
    } else {
      key = Node(Expr::Kind::kTuple, op);
      for (ExprPtr& a : args) {
        if (a->kind == Expr::Kind::kSlice) {
          return TokenStream::ErrorAt(op, "subscripts with several slices are not supported");
        }
        key->children.push_back(std::move(a));
      }
      if (absl::Status s = Seal(key.get()); !s.ok()) return s;
    }
    access->children.push_back(std::move(node));
    access->children.push_back(std::move(key));
  }
  if (absl::Status s = Seal(access.get()); !s.ok()) return s;
  return access;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseSubscribed() {
  const Token at = t_.Current();
  ExprPtr slice = Node(Expr::Kind::kSlice, at);
  slice->children.push_back(nullptr);  // the object, filled in by ParseSubscript
  if (t_.SkipOp(":")) {
    slice->children.push_back(nullptr);
  } else {
    absl::StatusOr<ExprPtr> start = ParseExpression();
    if (!start.ok() || !t_.IsOp(":")) return start;
    t_.Next();
    slice->children.push_back(std::move(*start));
  }
  const auto part = [&]() -> absl::Status {
    if (t_.IsOp("]") || t_.IsOp(",") || t_.IsOp(":")) {
      slice->children.push_back(nullptr);
      return absl::OkStatus();
    }
    absl::StatusOr<ExprPtr> e = ParseExpression();
    if (!e.ok()) return e.status();
    slice->children.push_back(std::move(*e));
    return absl::OkStatus();
  };
  if (absl::Status s = part(); !s.ok()) return s;  // stop
  if (t_.SkipOp(":")) {
    if (absl::Status s = part(); !s.ok()) return s;  // step
  } else {
    slice->children.push_back(nullptr);
  }
  if (absl::Status s = Seal(slice.get()); !s.ok()) return s;
  return slice;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseList() {
  ExprPtr list = Node(Expr::Kind::kList, t_.Next());
  while (!t_.IsOp("]")) {
    if (!list->children.empty()) {
      if (absl::Status s = t_.ExpectOp(","); !s.ok()) return s;
      if (t_.IsOp("]")) break;
    }
    absl::StatusOr<ExprPtr> item = ParseExpression();
    if (!item.ok()) return item;
    list->children.push_back(std::move(*item));
  }
  if (absl::Status s = t_.ExpectOp("]"); !s.ok()) return s;
  if (absl::Status s = Seal(list.get()); !s.ok()) return s;
  return list;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseDict() {
  ExprPtr dict = Node(Expr::Kind::kDict, t_.Next());
  while (!t_.IsOp("}")) {
    if (!dict->children.empty()) {
      if (absl::Status s = t_.ExpectOp(","); !s.ok()) return s;
      if (t_.IsOp("}")) break;
    }
    absl::StatusOr<ExprPtr> key = ParseExpression();
    if (!key.ok()) return key;
    if (absl::Status s = t_.ExpectOp(":"); !s.ok()) return s;
    absl::StatusOr<ExprPtr> value = ParseExpression();
    if (!value.ok()) return value;
    dict->children.push_back(std::move(*key));
    dict->children.push_back(std::move(*value));
  }
  if (absl::Status s = t_.ExpectOp("}"); !s.ok()) return s;
  if (absl::Status s = Seal(dict.get()); !s.ok()) return s;
  return dict;
}

absl::StatusOr<std::string> ExpressionParser::ParseDottedName() {
  absl::StatusOr<std::string> name = t_.ExpectName();
  while (name.ok() && t_.SkipOp(".")) {
    absl::StatusOr<std::string> part = t_.ExpectName();
    if (!part.ok()) return part;
    *name += "." + *part;
  }
  return name;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseFilter(ExprPtr node) {
  t_.Next();  // "|"
  const Token at = t_.Current();
  absl::StatusOr<std::string> name = ParseDottedName();
  if (!name.ok()) return name.status();
  if (!IsSupportedFilter(*name)) {
    return TokenStream::ErrorAt(at, absl::StrCat("filter \"", *name, "\" is not supported"));
  }
  ExprPtr filter = Node(Expr::Kind::kFilter, at);
  filter->name = *name;
  filter->children.push_back(std::move(node));
  if (t_.IsOp("(")) {
    if (absl::Status s = ParseCallArgs(filter.get()); !s.ok()) return s;
  }
  if (absl::Status s = Seal(filter.get()); !s.ok()) return s;
  return filter;
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseTest(ExprPtr node) {
  const Token is = t_.Next();
  const bool negated = t_.SkipName("not");
  const Token at = t_.Current();
  absl::StatusOr<std::string> name = ParseDottedName();
  if (!name.ok()) return name.status();
  if (!IsSupportedTest(*name)) {
    return TokenStream::ErrorAt(at, absl::StrCat("test \"", *name, "\" is not supported"));
  }
  ExprPtr test = Node(Expr::Kind::kTest, is);
  test->name = *name;
  test->children.push_back(std::move(node));
  const Token& cur = t_.Current();
  if (t_.IsOp("(")) {
    if (absl::Status s = ParseCallArgs(test.get()); !s.ok()) return s;
  } else if ((cur.kind == TokenKind::kName || cur.kind == TokenKind::kString ||
              cur.kind == TokenKind::kInteger || cur.kind == TokenKind::kFloat || t_.IsOp("[") ||
              t_.IsOp("{")) &&
             !t_.IsName("else") && !t_.IsName("or") && !t_.IsName("and")) {
    if (t_.IsName("is")) return t_.Error("tests cannot be chained with \"is\"");
    absl::StatusOr<ExprPtr> arg = ParsePrimary();
    if (arg.ok()) arg = ParsePostfix(std::move(*arg));
    if (!arg.ok()) return arg;
    test->children.push_back(std::move(*arg));
  }
  if (absl::Status s = Seal(test.get()); !s.ok()) return s;
  if (!negated) return test;
  ExprPtr negation = Node(Expr::Kind::kUnary, is);
  negation->name = "not";
  negation->children.push_back(std::move(test));
  if (absl::Status s = Seal(negation.get()); !s.ok()) return s;
  return negation;
}

absl::Status ExpressionParser::ParseCallArgs(Expr* call) {
  const Token open = t_.Next();  // "("
  bool require_comma = false;
  while (!t_.IsOp(")")) {
    if (require_comma) {
      if (absl::Status s = t_.ExpectOp(","); !s.ok()) return s;
      if (t_.IsOp(")")) break;
    }
    if (t_.IsOp("*") || t_.IsOp("**")) {
      return t_.Error("argument unpacking (*args, **kwargs) is not supported");
    }
    if (t_.Current().kind == TokenKind::kName && TokenStream::IsOp(t_.Look(), "=")) {
      const std::string key = t_.Next().text;
      t_.Next();
      for (const auto& [k, v] : call->kwargs) {
        if (k == key) return t_.Error(absl::StrCat("keyword argument \"", key, "\" repeated"));
      }
      absl::StatusOr<ExprPtr> value = ParseExpression();
      if (!value.ok()) return value.status();
      call->kwargs.emplace_back(key, std::move(*value));
    } else {
      if (!call->kwargs.empty()) {
        return TokenStream::ErrorAt(open, "positional argument follows keyword argument");
      }
      absl::StatusOr<ExprPtr> arg = ParseExpression();
      if (!arg.ok()) return arg.status();
      call->children.push_back(std::move(*arg));
    }
    require_comma = true;
  }
  return t_.ExpectOp(")");
}

absl::StatusOr<ExprPtr> ExpressionParser::ParseTuple(bool with_condexpr, const char* extra_end,
                                                     bool explicit_parens) {
  const Token at = t_.Current();
  const auto at_end = [&]() {
    const TokenKind k = t_.Current().kind;
    return k == TokenKind::kVariableEnd || k == TokenKind::kBlockEnd || t_.IsOp(")") ||
           (extra_end != nullptr && t_.IsName(extra_end));
  };
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty()) {
      if (absl::Status s = t_.ExpectOp(","); !s.ok()) return s;
    }
    if (at_end()) break;
    absl::StatusOr<ExprPtr> item = ParseExpression(with_condexpr);
    if (!item.ok()) return item;
    items.push_back(std::move(*item));
    if (!t_.IsOp(",")) break;
    is_tuple = true;
  }
  if (!is_tuple) {
    if (!items.empty()) return std::move(items[0]);
    if (!explicit_parens) return t_.Error(absl::StrCat("expected an expression, got ", t_.Describe()));
  }
  ExprPtr tuple = Node(Expr::Kind::kTuple, at);
  tuple->children = std::move(items);
  if (absl::Status s = Seal(tuple.get()); !s.ok()) return s;
  return tuple;
}

absl::StatusOr<std::vector<std::string>> ExpressionParser::ParseAssignTargets(const char* extra_end) {
  std::vector<std::string> names;
  const bool parenthesized = t_.SkipOp("(");
  while (true) {
    if (t_.IsOp("(")) return t_.Error("nested unpacking is not supported");
    const Token tok = t_.Current();
    absl::StatusOr<std::string> name = t_.ExpectName();
    if (!name.ok()) return name.status();
    if (IsReservedConstant(*name)) {
      return TokenStream::ErrorAt(tok, absl::StrCat("cannot assign to the constant \"", *name, "\""));
    }
    names.push_back(*name);
    if (!t_.SkipOp(",")) break;
    if (parenthesized ? t_.IsOp(")") : (t_.IsName(extra_end ? extra_end : "") ||
                                        t_.Current().kind == TokenKind::kBlockEnd)) {
      break;
    }
  }
  if (parenthesized) {
    if (absl::Status s = t_.ExpectOp(")"); !s.ok()) return s;
  }
  return names;
}

}  // namespace adapterd::tmpl
