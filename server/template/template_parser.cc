#include "server/template/template_parser.h"

#include <initializer_list>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/template/expression_parser.h"
#include "server/template/template_lexer.h"
#include "server/template/token_stream.h"

namespace adapterd::tmpl {
namespace {

// Tags jinja2 knows that the subset leaves out.
bool IsUnsupportedJinjaTag(std::string_view name) {
  for (std::string_view tag : {"include", "import", "from", "extends", "block", "call", "filter",
                               "with", "autoescape", "do", "trans", "pluralize", "debug"}) {
    if (name == tag) return true;
  }
  return false;
}

class StatementParser {
 public:
  explicit StatementParser(std::vector<Token> tokens) : t_(std::move(tokens)), expr_(&t_) {}

  // Statements up to one of `ends` (a block tag name, left unconsumed after
  // "{%"), or to the end of the template when `ends` is empty.
  absl::Status ParseBody(std::initializer_list<const char*> ends, Body* out, std::string* found);

 private:
  absl::StatusOr<std::unique_ptr<Stmt>> ParseStatement();
  absl::Status ParseIf(Stmt* s);
  absl::Status ParseFor(Stmt* s);
  absl::Status ParseSet(Stmt* s);
  absl::Status ParseMacro(Stmt* s);
  absl::Status EndTag() { return t_.Expect(TokenKind::kBlockEnd); }

  TokenStream t_;
  ExpressionParser expr_;
  int nesting_ = 0;
  int loop_depth_ = 0;
};

absl::Status StatementParser::ParseBody(std::initializer_list<const char*> ends, Body* out,
                                        std::string* found) {
  const auto wanted = [&]() {
    std::vector<std::string> tags;
    for (const char* e : ends) tags.push_back(absl::StrCat("{% ", e, " %}"));
    return absl::StrJoin(tags, " or ");
  };
  while (true) {
    const Token tok = t_.Current();
    switch (tok.kind) {
      case TokenKind::kEof:
        if (ends.size() == 0) return absl::OkStatus();
        return t_.Error(absl::StrCat("unexpected end of template; expected ", wanted()));
      case TokenKind::kData: {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->line = tok.line;
        s->text = t_.Next().text;
        out->push_back(std::move(s));
        break;
      }
      case TokenKind::kVariableBegin: {
        t_.Next();
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kPrint;
        s->line = tok.line;
        absl::StatusOr<ExprPtr> e = expr_.ParseTuple();
        if (!e.ok()) return e.status();
        s->expr = std::move(*e);
        if (absl::Status st = t_.Expect(TokenKind::kVariableEnd); !st.ok()) return st;
        out->push_back(std::move(s));
        break;
      }
      case TokenKind::kBlockBegin: {
        t_.Next();
        if (t_.Current().kind == TokenKind::kName) {
          for (const char* e : ends) {
            if (t_.IsName(e)) {
              *found = t_.Next().text;
              return absl::OkStatus();
            }
          }
        }
        absl::StatusOr<std::unique_ptr<Stmt>> s = ParseStatement();
        if (!s.ok()) return s.status();
        out->push_back(std::move(*s));
        break;
      }
      default: return t_.Error(absl::StrCat("unexpected ", t_.Describe()));
    }
  }
}

absl::StatusOr<std::unique_ptr<Stmt>> StatementParser::ParseStatement() {
  const Token tag = t_.Current();
  if (tag.kind != TokenKind::kName) {
    return t_.Error(absl::StrCat("expected a statement name after \"{%\", got ", t_.Describe()));
  }
  if (++nesting_ > TemplateParser::kMaxBlockNesting) {
    return t_.Error(absl::StrCat("statements nested more than ", TemplateParser::kMaxBlockNesting,
                                 " levels deep"));
  }
  auto s = std::make_unique<Stmt>();
  s->line = tag.line;
  const std::string& name = tag.text;
  t_.Next();
  absl::Status status;
  if (name == "if") {
    s->kind = Stmt::Kind::kIf;
    status = ParseIf(s.get());
  } else if (name == "for") {
    s->kind = Stmt::Kind::kFor;
    status = ParseFor(s.get());
  } else if (name == "set") {
    status = ParseSet(s.get());
  } else if (name == "macro") {
    s->kind = Stmt::Kind::kMacro;
    status = ParseMacro(s.get());
  } else if (name == "break" || name == "continue") {
    if (loop_depth_ == 0) {
      return TokenStream::ErrorAt(tag, absl::StrCat("\"{% ", std::string(name), " %}\" outside a loop"));
    }
    s->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
    status = EndTag();
  } else if (name == "generation") {
    s->kind = Stmt::Kind::kGeneration;
    std::string found;
    status = EndTag();
    if (status.ok()) status = ParseBody({"endgeneration"}, &s->body, &found);
    if (status.ok()) status = EndTag();
  } else if (IsUnsupportedJinjaTag(name)) {
    return TokenStream::ErrorAt(tag, absl::StrCat("statement \"{% ", std::string(name), " %}\" is not supported"));
  } else {
    return TokenStream::ErrorAt(tag, absl::StrCat("unknown statement \"{% ", std::string(name), " %}\""));
  }
  --nesting_;
  if (!status.ok()) return status;
  return s;
}

absl::Status StatementParser::ParseIf(Stmt* s) {
  std::string found = "if";
  while (found == "if" || found == "elif") {
    absl::StatusOr<ExprPtr> test = expr_.ParseTuple(false);
    if (!test.ok()) return test.status();
    if (absl::Status st = EndTag(); !st.ok()) return st;
    s->branches.emplace_back(std::move(*test), Body());
    found.clear();
    if (absl::Status st = ParseBody({"elif", "else", "endif"}, &s->branches.back().second, &found);
        !st.ok()) {
      return st;
    }
  }
  if (found == "else") {
    if (absl::Status st = EndTag(); !st.ok()) return st;
    if (absl::Status st = ParseBody({"endif"}, &s->else_body, &found); !st.ok()) return st;
  }
  return EndTag();
}

absl::Status StatementParser::ParseFor(Stmt* s) {
  absl::StatusOr<std::vector<std::string>> targets = expr_.ParseAssignTargets("in");
  if (!targets.ok()) return targets.status();
  s->targets = std::move(*targets);
  if (!t_.SkipName("in")) return t_.Error(absl::StrCat("expected \"in\", got ", t_.Describe()));
  absl::StatusOr<ExprPtr> iter = expr_.ParseTuple(false, "recursive");
  if (!iter.ok()) return iter.status();
  s->expr = std::move(*iter);
  if (t_.SkipName("if")) {
    absl::StatusOr<ExprPtr> filter = expr_.ParseExpression();
    if (!filter.ok()) return filter.status();
    s->filter = std::move(*filter);
  }
  if (t_.IsName("recursive")) return t_.Error("recursive loops are not supported");
  if (absl::Status st = EndTag(); !st.ok()) return st;
  std::string found;
  ++loop_depth_;
  absl::Status st = ParseBody({"endfor", "else"}, &s->body, &found);
  --loop_depth_;
  if (!st.ok()) return st;
  if (found == "else") {
    if (absl::Status e = EndTag(); !e.ok()) return e;
    if (absl::Status e = ParseBody({"endfor"}, &s->else_body, &found); !e.ok()) return e;
  }
  return EndTag();
}

absl::Status StatementParser::ParseSet(Stmt* s) {
  if (t_.Current().kind == TokenKind::kName && TokenStream::IsOp(t_.Look(), ".")) {
    s->targets.push_back(t_.Next().text);
    t_.Next();
    absl::StatusOr<std::string> attr = t_.ExpectName();
    if (!attr.ok()) return attr.status();
    s->attr = *attr;
  } else {
    absl::StatusOr<std::vector<std::string>> targets = expr_.ParseAssignTargets(nullptr);
    if (!targets.ok()) return targets.status();
    s->targets = std::move(*targets);
  }
  if (t_.SkipOp("=")) {
    s->kind = Stmt::Kind::kSet;
    absl::StatusOr<ExprPtr> value = expr_.ParseTuple();
    if (!value.ok()) return value.status();
    s->expr = std::move(*value);
    return EndTag();
  }
  s->kind = Stmt::Kind::kSetBlock;
  if (t_.IsOp("|")) return t_.Error("filters on block assignments are not supported");
  if (s->targets.size() != 1) return t_.Error("a block assignment takes one name");
  if (absl::Status st = EndTag(); !st.ok()) return st;
  std::string found;
  if (absl::Status st = ParseBody({"endset"}, &s->body, &found); !st.ok()) return st;
  return EndTag();
}

absl::Status StatementParser::ParseMacro(Stmt* s) {
  auto macro = std::make_unique<MacroDef>();
  macro->line = s->line;
  absl::StatusOr<std::string> name = t_.ExpectName();
  if (!name.ok()) return name.status();
  macro->name = *name;
  if (absl::Status st = t_.ExpectOp("("); !st.ok()) return st;
  while (!t_.IsOp(")")) {
    if (!macro->params.empty()) {
      if (absl::Status st = t_.ExpectOp(","); !st.ok()) return st;
    }
    absl::StatusOr<std::string> param = t_.ExpectName();
    if (!param.ok()) return param.status();
    macro->params.push_back(*param);
    if (t_.SkipOp("=")) {
      absl::StatusOr<ExprPtr> def = expr_.ParseExpression();
      if (!def.ok()) return def.status();
      macro->defaults.push_back(std::move(*def));
    } else if (!macro->defaults.empty()) {
      return t_.Error("non-default macro parameter follows a default one");
    }
  }
  t_.Next();
  if (absl::Status st = EndTag(); !st.ok()) return st;
  const int saved_loop_depth = loop_depth_;
  loop_depth_ = 0;
  expr_.set_in_macro(true);
  std::string found;
  absl::Status st = ParseBody({"endmacro"}, &macro->body, &found);
  expr_.set_in_macro(false);
  loop_depth_ = saved_loop_depth;
  if (!st.ok()) return st;
  s->macro = std::move(macro);
  return EndTag();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Body>> TemplateParser::Parse(std::string_view source) {
  absl::StatusOr<std::vector<Token>> tokens = TemplateLexer::Tokenize(source);
  if (!tokens.ok()) return tokens.status();
  StatementParser parser(std::move(*tokens));
  auto body = std::make_unique<Body>();
  std::string found;
  if (absl::Status s = parser.ParseBody({}, body.get(), &found); !s.ok()) return s;
  return body;
}

}  // namespace adapterd::tmpl
