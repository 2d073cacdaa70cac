#include "server/template/template_renderer.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/template/template_lexer.h"
#include "server/template/value_ops.h"

namespace adapterd::tmpl {
namespace {

absl::Status LineStatus(int line, absl::string_view message) {
  return absl::InvalidArgumentError(LineError(line, message));
}

}  // namespace

absl::StatusOr<std::string> TemplateRenderer::Render(const Body& body) {
  std::string out;
  absl::StatusOr<Flow> flow = Exec(body, &out);
  if (!flow.ok()) return flow.status();
  return out;
}

absl::Status TemplateRenderer::Append(std::string* out, std::string_view text, int line) {
  if (out->size() + text.size() > static_cast<uint64_t>(state_.limits().max_output_bytes)) {
    return LineStatus(line, absl::StrCat("the rendered output exceeds the limit of ",
                                         state_.limits().max_output_bytes, " bytes"));
  }
  out->append(text);
  return absl::OkStatus();
}

absl::StatusOr<TemplateRenderer::Flow> TemplateRenderer::Exec(const Body& body, std::string* out) {
  for (const auto& s : body) {
    absl::StatusOr<Flow> flow = ExecStatement(*s, out);
    if (!flow.ok() || *flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

absl::StatusOr<TemplateRenderer::Flow> TemplateRenderer::ExecStatement(const Stmt& s, std::string* out) {
  DepthGuard guard(&state_);
  if (!guard.ok()) return LineStatus(s.line, state_.RecursionError().message());
  switch (s.kind) {
    case Stmt::Kind::kText:
      if (absl::Status st = Append(out, s.text, s.line); !st.ok()) return st;
      return Flow::kNormal;
    case Stmt::Kind::kPrint: {
      absl::StatusOr<Value> v = eval_.Eval(*s.expr);
      if (!v.ok()) return v.status();
      absl::StatusOr<std::string> text = ToText(*v, state_);
      if (!text.ok()) return LineStatus(s.line, text.status().message());
      if (absl::Status st = Append(out, *text, s.line); !st.ok()) return st;
      return Flow::kNormal;
    }
    case Stmt::Kind::kIf:
      for (const auto& [test, body] : s.branches) {
        absl::StatusOr<Value> v = eval_.Eval(*test);
        if (!v.ok()) return v.status();
        if (v->Truthy()) return Exec(body, out);
      }
      return Exec(s.else_body, out);
    case Stmt::Kind::kFor: return ExecFor(s, out);
    case Stmt::Kind::kSetBlock: return ExecSetBlock(s);
    case Stmt::Kind::kSet:
    case Stmt::Kind::kMacro:
      if (absl::Status st = ExecSet(s, out); !st.ok()) return st;
      return Flow::kNormal;
    case Stmt::Kind::kBreak: return Flow::kBreak;
    case Stmt::Kind::kContinue: return Flow::kContinue;
    case Stmt::Kind::kGeneration: return Exec(s.body, out);
  }
  return Flow::kNormal;
}

Value TemplateRenderer::LoopObject(const std::vector<Value>& items, size_t i) {
  const int64_t n = static_cast<int64_t>(items.size());
  const int64_t index0 = static_cast<int64_t>(i);
  CallableData cycle;
  cycle.kind = CallableData::Kind::kLoopCycle;
  cycle.name = "cycle";
  cycle.receiver = std::make_shared<const Value>(Value::Int(index0));
  const auto s = [](const char* k) { return Value::String(k); };
  return Value::Loop({
      {s("index"), Value::Int(index0 + 1)},
      {s("index0"), Value::Int(index0)},
      {s("revindex"), Value::Int(n - index0)},
      {s("revindex0"), Value::Int(n - index0 - 1)},
      {s("first"), Value::Bool(i == 0)},
      {s("last"), Value::Bool(index0 == n - 1)},
      {s("length"), Value::Int(n)},
      {s("depth"), Value::Int(1)},
      {s("depth0"), Value::Int(0)},
      {s("previtem"), i > 0 ? items[i - 1] : Value::Undefined("there is no previous item")},
      {s("nextitem"), index0 + 1 < n ? items[i + 1] : Value::Undefined("there is no next item")},
      {s("cycle"), Value::Callable(std::move(cycle))},
  });
}

absl::StatusOr<TemplateRenderer::Flow> TemplateRenderer::ExecFor(const Stmt& s, std::string* out) {
  absl::StatusOr<Value> iterable = eval_.Eval(*s.expr);
  if (!iterable.ok()) return iterable.status();
  absl::StatusOr<std::vector<Value>> all = Iterate(*iterable, state_);
  if (!all.ok()) return LineStatus(s.line, all.status().message());
  std::vector<Value> items;
  if (s.filter) {
    for (Value& item : *all) {
      if (absl::Status st = state_.CountIteration(); !st.ok()) return LineStatus(s.line, st.message());
      scope_.Push();
      absl::Status bound = Bind(s.targets, item, s.line);
      absl::StatusOr<Value> keep = bound.ok() ? eval_.Eval(*s.filter) : absl::StatusOr<Value>(bound);
      scope_.Pop();
      if (!keep.ok()) return keep.status();
      if (keep->Truthy()) items.push_back(std::move(item));
    }
  } else {
    items = std::move(*all);
  }
  // As jinja2 compiles it, the else block runs unless some iteration reached
  // the end of the body: iterations left by break or continue do not count.
  bool completed = false;
  for (size_t i = 0; i < items.size(); ++i) {
    if (absl::Status st = state_.CountIteration(); !st.ok()) return LineStatus(s.line, st.message());
    scope_.Push();
    absl::Status bound = Bind(s.targets, items[i], s.line);
    if (bound.ok()) {
      Value loop = LoopObject(items, i);
      bound = state_.CheckValue(loop);
      if (bound.ok()) {
        scope_.Set("loop", std::move(loop));
      } else {
        bound = LineStatus(s.line, bound.message());
      }
    }
    absl::StatusOr<Flow> flow = bound.ok() ? Exec(s.body, out) : absl::StatusOr<Flow>(bound);
    scope_.Pop();
    if (!flow.ok()) return flow;
    if (*flow == Flow::kBreak) break;
    if (*flow == Flow::kNormal) completed = true;
  }
  if (completed || s.else_body.empty()) return Flow::kNormal;
  scope_.Push();  // the else block has its own frame
  absl::StatusOr<Flow> flow = Exec(s.else_body, out);
  scope_.Pop();
  return flow;
}

absl::Status TemplateRenderer::Bind(const std::vector<std::string>& targets, const Value& value, int line) {
  if (targets.size() == 1) {
    scope_.Set(targets[0], value);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<Value>> parts = Iterate(value, state_);
  if (!parts.ok()) {
    return LineStatus(line, absl::StrCat("cannot unpack non-iterable ", value.TypeName(), " object"));
  }
  if (parts->size() < targets.size()) {
    return LineStatus(line, absl::StrCat("not enough values to unpack (expected ", targets.size(),
                                         ", got ", parts->size(), ")"));
  }
  if (parts->size() > targets.size()) {
    return LineStatus(line, absl::StrCat("too many values to unpack (expected ", targets.size(), ")"));
  }
  for (size_t i = 0; i < targets.size(); ++i) scope_.Set(targets[i], (*parts)[i]);
  return absl::OkStatus();
}

absl::Status TemplateRenderer::Assign(const Stmt& s, Value value) {
  if (absl::Status st = state_.CheckValue(value); !st.ok()) return LineStatus(s.line, st.message());
  if (s.attr.empty()) return Bind(s.targets, value, s.line);
  const Value* target = scope_.Find(s.targets[0]);
  if (target == nullptr || target->kind() != Value::Kind::kNamespace) {
    return LineStatus(s.line, "cannot assign attribute on non-namespace object");
  }
  NamespaceData* ns = target->AsNamespace();
  if (Value* existing = ns->Find(s.attr)) {
    *existing = std::move(value);
  } else {
    ns->attrs.emplace_back(s.attr, std::move(value));
  }
  return absl::OkStatus();
}

absl::Status TemplateRenderer::ExecSet(const Stmt& s, std::string* out) {
  if (s.kind == Stmt::Kind::kMacro) {
    CallableData fn;
    fn.kind = CallableData::Kind::kMacro;
    fn.name = s.macro->name;
    fn.macro = s.macro.get();
    fn.frame = scope_.top();
    scope_.Set(s.macro->name, Value::Callable(std::move(fn)));
    return absl::OkStatus();
  }
  absl::StatusOr<Value> value = eval_.Eval(*s.expr);
  if (!value.ok()) return value.status();
  return Assign(s, std::move(*value));
}

// The body renders in its own frame. A break or continue inside it leaves
// the enclosing loop before anything is assigned, as in jinja2.
absl::StatusOr<TemplateRenderer::Flow> TemplateRenderer::ExecSetBlock(const Stmt& s) {
  std::string captured;
  scope_.Push();
  absl::StatusOr<Flow> flow = Exec(s.body, &captured);
  scope_.Pop();
  if (!flow.ok() || *flow != Flow::kNormal) return flow;
  if (absl::Status st = Assign(s, Value::String(std::move(captured))); !st.ok()) return st;
  return Flow::kNormal;
}

absl::StatusOr<Value> TemplateRenderer::CallMacro(const CallableData& fn, const CallArgs& args, int line) {
  const MacroDef& m = *fn.macro;
  DepthGuard guard(&state_);
  if (!guard.ok()) return LineStatus(line, state_.RecursionError().message());
  if (args.positional.size() > m.params.size()) {
    return LineStatus(line, absl::StrCat("macro '", m.name, "' takes not more than ", m.params.size(),
                                         " argument(s)"));
  }
  std::vector<std::optional<Value>> bound(m.params.size());
  for (size_t i = 0; i < args.positional.size(); ++i) bound[i] = args.positional[i];
  for (const auto& [name, value] : args.keyword) {
    size_t i = 0;
    while (i < m.params.size() && m.params[i] != name) ++i;
    if (i == m.params.size()) {
      return LineStatus(line, absl::StrCat("macro '", m.name, "' takes no keyword argument '", std::string(name), "'"));
    }
    if (bound[i].has_value()) {
      return LineStatus(line, absl::StrCat("macro '", m.name, "' got multiple values for argument '", std::string(name), "'"));
    }
    bound[i] = value;
  }
  scope_.Push(fn.frame);
  absl::Status status;
  const size_t first_default = m.params.size() - m.defaults.size();
  for (size_t i = 0; i < m.params.size() && status.ok(); ++i) {
    if (bound[i].has_value()) {
      scope_.Set(m.params[i], *bound[i]);
    } else if (i >= first_default) {
      absl::StatusOr<Value> def = eval_.Eval(*m.defaults[i - first_default]);
      if (def.ok()) scope_.Set(m.params[i], *def);
      status = def.status();
    } else {
      scope_.Set(m.params[i], Value::Undefined(absl::StrCat("'", m.params[i], "' is undefined")));
    }
  }
  std::string out;
  if (status.ok()) {
    absl::StatusOr<Flow> flow = Exec(m.body, &out);
    status = flow.status();
  }
  scope_.Pop();
  if (!status.ok()) return status;
  return Value::String(std::move(out));
}

}  // namespace adapterd::tmpl
