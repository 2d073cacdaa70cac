// Evaluates expression trees against a Scope with jinja2's semantics under
// transformers' sandbox: names, literals, operators (short-circuit and/or,
// chained comparisons), attribute and item access, slices, filters, tests
// and calls of globals (range, namespace, dict, raise_exception,
// strftime_now), methods, macros and loop.cycle.
//
// Runtime errors are INVALID_ARGUMENT "chat template line N: ...", except a
// template's raise_exception(message), whose status message is exactly the
// message. One evaluator per render; not thread-safe.
#ifndef ADAPTERD_SERVER_TEMPLATE_EXPRESSION_EVALUATOR_H_
#define ADAPTERD_SERVER_TEMPLATE_EXPRESSION_EVALUATOR_H_

#include "absl/status/statusor.h"
#include "server/template/call_args.h"
#include "server/template/render_state.h"
#include "server/template/template_ast.h"
#include "server/template/template_scope.h"
#include "server/template/template_value.h"

namespace adapterd::tmpl {

// Runs a macro's body; implemented by the statement renderer.
class MacroCaller {
 public:
  virtual ~MacroCaller() = default;
  virtual absl::StatusOr<Value> CallMacro(const CallableData& macro, const CallArgs& args, int line) = 0;
};

class ExpressionEvaluator {
 public:
  // All three must outlive the evaluator.
  ExpressionEvaluator(Scope* scope, RenderState* state, MacroCaller* macros)
      : scope_(*scope), state_(*state), macros_(*macros) {}

  absl::StatusOr<Value> Eval(const Expr& e);

 private:
  absl::StatusOr<Value> EvalInner(const Expr& e);
  absl::StatusOr<Value> EvalName(const Expr& e);
  absl::StatusOr<Value> EvalSequence(const Expr& e);
  absl::StatusOr<Value> EvalDict(const Expr& e);
  absl::StatusOr<Value> EvalAccess(const Expr& e);
  absl::StatusOr<Value> EvalCall(const Expr& e);
  absl::StatusOr<Value> EvalFilterOrTest(const Expr& e);
  absl::StatusOr<Value> EvalBinary(const Expr& e);
  absl::StatusOr<Value> EvalCompare(const Expr& e);
  absl::StatusOr<CallArgs> EvalArgs(const Expr& e);
  absl::StatusOr<Value> CallGlobal(const Expr& e, const std::string& name, const CallArgs& args);
  absl::StatusOr<Value> MakeNamespace(const CallArgs& args);

  Scope& scope_;
  RenderState& state_;
  MacroCaller& macros_;
};

// The global functions a template can call by name.
bool IsGlobalFunction(std::string_view name);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_EXPRESSION_EVALUATOR_H_
