// The syntax tree of a parsed chat template. Built once by TemplateParser,
// then only read: a tree is shared by every render of its ChatTemplate, so
// renders may walk it concurrently. Nodes own their children.
#ifndef ADAPTERD_SERVER_TEMPLATE_TEMPLATE_AST_H_
#define ADAPTERD_SERVER_TEMPLATE_TEMPLATE_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/template/template_value.h"

namespace adapterd::tmpl {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // children: items
    kTuple,     // children: items
    kDict,      // children: key0, value0, key1, value1, ...
    kGetAttr,   // children[0].name
    kGetItem,   // children[0][children[1]]
    kSlice,     // children[0][children[1]:children[2]:children[3]], parts may be null
    kCall,      // children[0](children[1..], kwargs)
    kFilter,    // children[0]|name(children[1..], kwargs)
    kTest,      // children[0] is name(children[1..], kwargs)
    kUnary,     // name ("-", "+", "not") children[0]
    kBinary,    // children[0] name children[1]; name: + - * / // % ** ~ and or
    kCompare,   // children[0] ops[0] children[1] ops[1] children[2] ...
    kCondExpr,  // children[1] if children[0] else children[2] (may be null)
  };
  Kind kind = Kind::kLiteral;
  int line = 1;
  int column = 1;
  int depth = 1;  // height of this subtree
  Value literal;
  std::string name;
  std::vector<ExprPtr> children;
  std::vector<std::string> ops;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

// A {% macro %}: parameters with defaults for the trailing ones.
struct MacroDef {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // defaults[i] belongs to params[params.size() - defaults.size() + i]
  Body body;
  int line = 1;
};

struct Stmt {
  enum class Kind {
    kText,        // text
    kPrint,       // {{ expr }}
    kIf,          // branches (test, body); else_body
    kFor,         // for targets in expr [if filter]: body; else_body
    kSet,         // set targets = expr, or set targets[0].attr = expr
    kSetBlock,    // set targets[0] %}body{% endset
    kMacro,       // macro
    kBreak,
    kContinue,
    kGeneration,  // transformers' {% generation %}: renders its body
  };
  Kind kind = Kind::kText;
  int line = 1;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;                    // kFor: inline `if`
  std::vector<std::string> targets;  // kFor, kSet, kSetBlock
  std::string attr;                  // kSet on a namespace: targets[0].attr
  std::vector<std::pair<ExprPtr, Body>> branches;  // kIf
  Body body;                          // kFor, kSetBlock, kGeneration
  Body else_body;                     // kIf, kFor
  std::unique_ptr<MacroDef> macro;    // kMacro
};

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_TEMPLATE_AST_H_
