#include "server/template/template_tests.h"

#include <algorithm>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/template/template_filters.h"
#include "server/template/text_util.h"
#include "server/template/value_ops.h"

namespace adapterd::tmpl {
namespace {

constexpr std::initializer_list<std::string_view> kUnary = {
    "boolean", "callable", "defined", "even", "false", "float",  "integer", "iterable",
    "lower",   "mapping",  "none",    "number", "odd", "sequence", "string", "true",
    "undefined", "upper",  "filter",  "test"};
constexpr std::initializer_list<std::string_view> kBinary = {
    "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=",
    "gt", "greaterthan", ">", "ge", ">=", "in", "sameas"};

bool Contains(std::initializer_list<std::string_view> names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

absl::StatusOr<bool> UnaryTest(std::string_view name, const Value& v, RenderState& state) {
  using K = Value::Kind;
  const K k = v.kind();
  if (name == "defined") return k != K::kUndefined;
  if (name == "undefined") return k == K::kUndefined;
  if (name == "none") return k == K::kNone;
  if (name == "boolean") return k == K::kBool;
  if (name == "true") return k == K::kBool && v.AsBool();
  if (name == "false") return k == K::kBool && !v.AsBool();
  if (name == "integer") return k == K::kInt;
  if (name == "float") return k == K::kFloat;
  if (name == "number") return v.is_number();
  if (name == "string") return k == K::kString;
  if (name == "mapping") return k == K::kDict;
  if (name == "iterable") {
    return k == K::kUndefined || k == K::kString || k == K::kList || k == K::kDict ||
           k == K::kIterator || k == K::kLoop;
  }
  if (name == "sequence") {
    return k == K::kUndefined || k == K::kString || k == K::kDict ||
           (k == K::kList && v.AsList().flavor <= ListFlavor::kRange);
  }
  if (name == "callable") return k == K::kCallable || k == K::kLoop;
  if (name == "lower" || name == "upper") {  // str(value).islower()
    absl::StatusOr<std::string> s = ToText(v, state);
    if (!s.ok()) return s.status();
    return name == "upper" ? text::PyIsUpper(*s) : text::PyIsLower(*s);
  }
  if (name == "filter" || name == "test") {
    if (k != K::kString) return false;
    return name == "filter" ? IsSupportedFilter(v.AsString()) : IsSupportedTest(v.AsString());
  }
  // odd, even
  absl::StatusOr<Value> r = BinaryOp("%", v, Value::Int(2), state);
  if (!r.ok()) return r.status();
  const bool odd = PyEquals(*r, Value::Int(1));
  return name == "odd" ? odd : PyEquals(*r, Value::Int(0));
}

bool SameAs(const Value& a, const Value& b) {
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kNone:
    case Value::Kind::kUndefined: return a.is_none();
    case Value::Kind::kBool:
    case Value::Kind::kInt: return a.AsInt() == b.AsInt();
    case Value::Kind::kString: return &a.AsString() == &b.AsString();
    default: return PyEquals(a, b) && (a.kind() != Value::Kind::kList || &a.AsList() == &b.AsList()) &&
                    (a.kind() != Value::Kind::kDict || &a.AsDict() == &b.AsDict());
  }
}

absl::StatusOr<bool> BinaryTest(std::string_view name, const Value& v, const Value& other,
                                RenderState& state) {
  if (name == "eq" || name == "equalto" || name == "==") return PyEquals(v, other);
  if (name == "ne" || name == "!=") return !PyEquals(v, other);
  if (name == "in") return Contains(other, v, state);
  if (name == "sameas") return SameAs(v, other);
  if (name == "divisibleby") {
    absl::StatusOr<Value> r = BinaryOp("%", v, other, state);
    if (!r.ok()) return r.status();
    return PyEquals(*r, Value::Int(0));
  }
  std::string op = std::string(name);
  if (name == "lt" || name == "lessthan") op = "<";
  if (name == "le") op = "<=";
  if (name == "gt" || name == "greaterthan") op = ">";
  if (name == "ge") op = ">=";
  absl::StatusOr<int> c = PyCompare(v, other, op);
  if (!c.ok()) return c.status();
  if (op == "<") return *c < 0;
  if (op == "<=") return *c <= 0;
  if (op == ">") return *c > 0;
  return *c >= 0;
}

}  // namespace

bool IsSupportedTest(std::string_view name) { return Contains(kUnary, name) || Contains(kBinary, name); }

absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& value, const CallArgs& args,
                               RenderState& state) {
  const std::string what = absl::StrCat("test \"", std::string(name), "\"");
  if (Contains(kUnary, name)) {
    absl::StatusOr<std::vector<Value>> a = BindArgs(args, {}, what);
    if (!a.ok()) return a.status();
    return UnaryTest(name, value, state);
  }
  if (Contains(kBinary, name)) {
    absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"other", std::nullopt}}, what);
    if (!a.ok()) return a.status();
    return BinaryTest(name, value, (*a)[0], state);
  }
  return absl::InvalidArgumentError(absl::StrCat(std::string(what), " is not supported"));
}

}  // namespace adapterd::tmpl
