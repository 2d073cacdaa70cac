#include "server/template/expression_evaluator.h"

#include <ctime>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/template/template_filters.h"
#include "server/template/template_lexer.h"
#include "server/template/template_tests.h"
#include "server/template/value_format.h"
#include "server/template/value_methods.h"
#include "server/template/value_ops.h"

namespace adapterd::tmpl {
namespace {

// A value-level error, placed at the line of `e`.
absl::Status At(const Expr& e, const absl::Status& s) {
  return absl::InvalidArgumentError(LineError(e.line, s.message()));
}

absl::Status At(const Expr& e, absl::string_view message) {
  return absl::InvalidArgumentError(LineError(e.line, message));
}

constexpr std::string_view kGlobals[] = {"range", "namespace", "dict", "raise_exception",
                                         "strftime_now", "lipsum", "cycler", "joiner"};

absl::StatusOr<Value> Range(const CallArgs& args, RenderState& state) {
  if (!args.keyword.empty()) return absl::InvalidArgumentError("range() takes no keyword arguments");
  const size_t n = args.positional.size();
  if (n < 1 || n > 3) {
    return absl::InvalidArgumentError(absl::StrCat("range expected 1 to 3 arguments, got ", n));
  }
  int64_t bounds[3] = {0, 0, 1};
  for (size_t i = 0; i < n; ++i) {
    absl::StatusOr<int64_t> v = IntArg(args.positional[i], "range()");
    if (!v.ok()) return v.status();
    bounds[n == 1 ? 1 : i] = *v;
  }
  const int64_t start = bounds[0], stop = bounds[1], step = bounds[2];
  if (step == 0) return absl::InvalidArgumentError("range() arg 3 must not be zero");
  const double count = step > 0 ? (stop > start ? (static_cast<double>(stop) - start + step - 1) / step : 0)
                                : (start > stop ? (static_cast<double>(start) - stop - step - 1) / -step : 0);
  if (count > 100000) {
    return absl::InvalidArgumentError(
        "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  }
  if (absl::Status s = state.CheckItems(static_cast<size_t>(count)); !s.ok()) return s;
  std::vector<Value> items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    items.push_back(Value::Int(i));
    if (items.size() >= static_cast<size_t>(count)) break;
  }
  return Value::Range(std::move(items), start, stop, step);
}

absl::StatusOr<Value> StrftimeNow(const CallArgs& args, RenderState& state) {
  absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"format", std::nullopt}}, "strftime_now()");
  if (!a.ok()) return a.status();
  absl::StatusOr<std::string> format = StringArg((*a)[0], "strftime_now() format");
  if (!format.ok()) return format.status();
  if (format->empty()) return Value::String("");
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  const size_t room = std::min<size_t>(format->size() * 64 + 64, 1 << 20);
  if (absl::Status s = state.CheckString(room); !s.ok()) return s;
  std::string out(room, '\0');
  const size_t n = std::strftime(out.data(), out.size(), format->c_str(), &local);
  out.resize(n);
  return Value::String(std::move(out));
}

}  // namespace

bool IsGlobalFunction(std::string_view name) {
  for (std::string_view g : kGlobals) {
    if (g == name) return true;
  }
  return false;
}

absl::StatusOr<Value> ExpressionEvaluator::Eval(const Expr& e) {
  DepthGuard guard(&state_);
  if (!guard.ok()) return At(e, state_.RecursionError());
  return EvalInner(e);
}

absl::StatusOr<Value> ExpressionEvaluator::EvalInner(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral: return e.literal;
    case Expr::Kind::kName: return EvalName(e);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: return EvalSequence(e);
    case Expr::Kind::kDict: return EvalDict(e);
    case Expr::Kind::kGetAttr:
    case Expr::Kind::kGetItem:
    case Expr::Kind::kSlice: return EvalAccess(e);
    case Expr::Kind::kCall: return EvalCall(e);
    case Expr::Kind::kFilter:
    case Expr::Kind::kTest: return EvalFilterOrTest(e);
    case Expr::Kind::kUnary: {
      absl::StatusOr<Value> v = Eval(*e.children[0]);
      if (!v.ok()) return v;
      if (e.name == "not") return Value::Bool(!v->Truthy());
      absl::StatusOr<Value> r = UnaryOp(e.name, *v);
      return r.ok() ? r : At(e, r.status());
    }
    case Expr::Kind::kBinary: return EvalBinary(e);
    case Expr::Kind::kCompare: return EvalCompare(e);
    case Expr::Kind::kCondExpr: {
      absl::StatusOr<Value> test = Eval(*e.children[0]);
      if (!test.ok()) return test;
      if (test->Truthy()) return Eval(*e.children[1]);
      if (e.children[2]) return Eval(*e.children[2]);
      return Value::Undefined(absl::StrCat("the inline if-expression on line ", e.line,
                                           " evaluated to false and no else section was defined."));
    }
  }
  return At(e, "unknown expression");
}

absl::StatusOr<Value> ExpressionEvaluator::EvalName(const Expr& e) {
  if (const Value* v = scope_.Find(e.name)) return *v;
  if (IsGlobalFunction(e.name)) {
    CallableData fn;
    fn.kind = CallableData::Kind::kGlobal;
    fn.name = e.name;
    return Value::Callable(std::move(fn));
  }
  return Value::Undefined(absl::StrCat(StringRepr(e.name), " is undefined"));
}

absl::StatusOr<Value> ExpressionEvaluator::EvalSequence(const Expr& e) {
  std::vector<Value> items;
  items.reserve(e.children.size());
  for (const ExprPtr& c : e.children) {
    absl::StatusOr<Value> v = Eval(*c);
    if (!v.ok()) return v;
    items.push_back(std::move(*v));
  }
  Value list = Value::List(std::move(items), e.kind == Expr::Kind::kTuple);
  if (absl::Status s = state_.CheckValue(list); !s.ok()) return At(e, s);
  if (absl::Status s = state_.Charge(static_cast<int64_t>(e.children.size())); !s.ok()) return At(e, s);
  return list;
}

absl::StatusOr<Value> ExpressionEvaluator::EvalDict(const Expr& e) {
  std::vector<std::pair<Value, Value>> entries;
  for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
    absl::StatusOr<Value> k = Eval(*e.children[i]);
    if (!k.ok()) return k;
    absl::StatusOr<Value> v = Eval(*e.children[i + 1]);
    if (!v.ok()) return v;
    if (!IsHashable(*k)) return At(e, absl::StrCat("unhashable type: '", k->TypeName(), "'"));
    bool replaced = false;
    for (auto& [key, value] : entries) {
      if (PyEquals(key, *k)) {
        value = std::move(*v);
        replaced = true;
        break;
      }
    }
    if (!replaced) entries.emplace_back(std::move(*k), std::move(*v));
  }
  Value dict = Value::Dict(std::move(entries));
  if (absl::Status s = state_.CheckValue(dict); !s.ok()) return At(e, s);
  if (absl::Status s = state_.Charge(static_cast<int64_t>(e.children.size())); !s.ok()) return At(e, s);
  return dict;
}

absl::StatusOr<Value> ExpressionEvaluator::EvalAccess(const Expr& e) {
  absl::StatusOr<Value> obj = Eval(*e.children[0]);
  if (!obj.ok()) return obj;
  absl::StatusOr<Value> r;
  if (e.kind == Expr::Kind::kGetAttr) {
    r = GetAttr(*obj, e.name);
  } else if (e.kind == Expr::Kind::kGetItem) {
    absl::StatusOr<Value> key = Eval(*e.children[1]);
    if (!key.ok()) return key;
    r = GetItem(*obj, *key);
  } else {
    Value parts[3] = {Value::None(), Value::None(), Value::None()};
    for (int i = 0; i < 3; ++i) {
      if (!e.children[i + 1]) continue;
      absl::StatusOr<Value> p = Eval(*e.children[i + 1]);
      if (!p.ok()) return p;
      parts[i] = std::move(*p);
    }
    r = GetSlice(*obj, parts[0], parts[1], parts[2], state_);
  }
  return r.ok() ? r : At(e, r.status());
}

absl::StatusOr<CallArgs> ExpressionEvaluator::EvalArgs(const Expr& e) {
  CallArgs args;
  for (size_t i = 1; i < e.children.size(); ++i) {
    absl::StatusOr<Value> v = Eval(*e.children[i]);
    if (!v.ok()) return v.status();
    args.positional.push_back(std::move(*v));
  }
  for (const auto& [name, expr] : e.kwargs) {
    absl::StatusOr<Value> v = Eval(*expr);
    if (!v.ok()) return v.status();
    args.keyword.emplace_back(name, std::move(*v));
  }
  return args;
}

absl::StatusOr<Value> ExpressionEvaluator::EvalCall(const Expr& e) {
  absl::StatusOr<Value> callee = Eval(*e.children[0]);
  if (!callee.ok()) return callee;
  if (callee->is_undefined()) return At(e, callee->UndefinedMessage());
  if (callee->kind() != Value::Kind::kCallable) {
    return At(e, absl::StrCat("'", callee->TypeName(), "' object is not callable"));
  }
  absl::StatusOr<CallArgs> args = EvalArgs(e);
  if (!args.ok()) return args.status();
  const CallableData& fn = callee->AsCallable();
  absl::StatusOr<Value> r;
  switch (fn.kind) {
    case CallableData::Kind::kGlobal: return CallGlobal(e, fn.name, *args);
    case CallableData::Kind::kMacro: return macros_.CallMacro(fn, *args, e.line);
    case CallableData::Kind::kMethod:
      r = CallMethod(*fn.receiver, fn.name, *args, state_);
      if (r.ok()) {
        if (absl::Status s = state_.CheckValue(*r); !s.ok()) return At(e, s);
      }
      break;
    case CallableData::Kind::kLoopCycle:
      if (args->positional.empty() || !args->keyword.empty()) {
        return At(e, "loop.cycle() needs positional items to cycle through");
      }
      return args->positional[fn.receiver->AsInt() % static_cast<int64_t>(args->positional.size())];
  }
  return r.ok() ? r : At(e, r.status());
}

absl::StatusOr<Value> ExpressionEvaluator::CallGlobal(const Expr& e, const std::string& name,
                                                      const CallArgs& args) {
  absl::StatusOr<Value> r;
  if (name == "raise_exception") {
    absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"message", std::nullopt}}, "raise_exception()");
    if (!a.ok()) return At(e, a.status());
    absl::StatusOr<std::string> message = ToText((*a)[0], state_);
    if (!message.ok()) return At(e, message.status());
    return absl::InvalidArgumentError(*message);  // exactly the template's message
  }
  if (name == "range") {
    r = Range(args, state_);
  } else if (name == "namespace") {
    r = MakeNamespace(args);
  } else if (name == "dict") {
    if (!args.positional.empty()) return At(e, "dict() with positional arguments is not supported");
    std::vector<std::pair<Value, Value>> entries;
    for (const auto& [k, v] : args.keyword) entries.emplace_back(Value::String(k), v);
    r = Value::Dict(std::move(entries));
  } else if (name == "strftime_now") {
    r = StrftimeNow(args, state_);
  } else {
    return At(e, absl::StrCat("global function \"", std::string(name), "\" is not supported"));
  }
  if (r.ok()) {
    if (absl::Status s = state_.CheckValue(*r); !s.ok()) return At(e, s);
  }
  return r.ok() ? r : At(e, r.status());
}

absl::StatusOr<Value> ExpressionEvaluator::MakeNamespace(const CallArgs& args) {
  NamespaceData* ns = state_.NewNamespace();
  const auto set = [&](const std::string& k, const Value& v) {
    if (Value* existing = ns->Find(k)) {
      *existing = v;
    } else {
      ns->attrs.emplace_back(k, v);
    }
  };
  if (args.positional.size() > 1) {
    return absl::InvalidArgumentError("namespace() takes at most one positional argument");
  }
  if (!args.positional.empty()) {
    const Value& init = args.positional[0];
    if (!init.is_dict()) return absl::InvalidArgumentError("namespace() positional argument must be a dict");
    for (const auto& [k, v] : init.AsDict().entries) {
      if (!k.is_string()) return absl::InvalidArgumentError("namespace() keys must be strings");
      set(k.AsString(), v);
    }
  }
  for (const auto& [k, v] : args.keyword) set(k, v);
  return Value::Namespace(ns);
}

absl::StatusOr<Value> ExpressionEvaluator::EvalFilterOrTest(const Expr& e) {
  absl::StatusOr<Value> value = Eval(*e.children[0]);
  if (!value.ok()) return value;
  absl::StatusOr<CallArgs> args = EvalArgs(e);
  if (!args.ok()) return args.status();
  if (e.kind == Expr::Kind::kFilter) {
    absl::StatusOr<Value> r = ApplyFilter(e.name, *value, *args, state_);
    if (r.ok()) {
      if (absl::Status s = state_.CheckValue(*r); !s.ok()) return At(e, s);
    }
    return r.ok() ? r : At(e, r.status());
  }
  absl::StatusOr<bool> r = ApplyTest(e.name, *value, *args, state_);
  if (!r.ok()) return At(e, r.status());
  return Value::Bool(*r);
}

absl::StatusOr<Value> ExpressionEvaluator::EvalBinary(const Expr& e) {
  absl::StatusOr<Value> left = Eval(*e.children[0]);
  if (!left.ok()) return left;
  if (e.name == "and") return left->Truthy() ? Eval(*e.children[1]) : left;
  if (e.name == "or") return left->Truthy() ? left : Eval(*e.children[1]);
  absl::StatusOr<Value> right = Eval(*e.children[1]);
  if (!right.ok()) return right;
  absl::StatusOr<Value> r = BinaryOp(e.name, *left, *right, state_);
  return r.ok() ? r : At(e, r.status());
}

absl::StatusOr<Value> ExpressionEvaluator::EvalCompare(const Expr& e) {
  absl::StatusOr<Value> left = Eval(*e.children[0]);
  if (!left.ok()) return left;
  for (size_t i = 0; i < e.ops.size(); ++i) {
    absl::StatusOr<Value> right = Eval(*e.children[i + 1]);
    if (!right.ok()) return right;
    const std::string& op = e.ops[i];
    bool result;
    if (op == "==" || op == "!=") {
      result = PyEquals(*left, *right) == (op == "==");
    } else if (op == "in" || op == "notin") {
      absl::StatusOr<bool> in = Contains(*right, *left, state_);
      if (!in.ok()) return At(e, in.status());
      result = *in == (op == "in");
    } else {
      absl::StatusOr<int> c = PyCompare(*left, *right, op);
      if (!c.ok()) return At(e, c.status());
      result = op == "<" ? *c < 0 : (op == "<=" ? *c <= 0 : (op == ">" ? *c > 0 : *c >= 0));
    }
    if (!result) return Value::Bool(false);
    left = std::move(right);
  }
  return Value::Bool(true);
}

}  // namespace adapterd::tmpl
