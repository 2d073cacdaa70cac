// Renders a parsed template body for one context: text, {{ }} output,
// if/for/set/macro/generation statements and loop controls, with jinja2's
// scoping (a loop iteration or macro call gets its own frame) and the
// limits of TemplateLimits. One renderer per render; not thread-safe. The
// body must outlive the renderer.
#ifndef ADAPTERD_SERVER_TEMPLATE_TEMPLATE_RENDERER_H_
#define ADAPTERD_SERVER_TEMPLATE_TEMPLATE_RENDERER_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/template/expression_evaluator.h"
#include "server/template/render_state.h"
#include "server/template/template_ast.h"
#include "server/template/template_scope.h"

namespace adapterd::tmpl {

class TemplateRenderer : public MacroCaller {
 public:
  // `context` must be a dict Value.
  TemplateRenderer(Value context, const TemplateLimits& limits)
      : context_(std::move(context)), state_(limits), scope_(context_), eval_(&scope_, &state_, this) {}

  absl::StatusOr<std::string> Render(const Body& body);
  absl::StatusOr<Value> CallMacro(const CallableData& macro, const CallArgs& args, int line) override;

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  absl::StatusOr<Flow> Exec(const Body& body, std::string* out);
  absl::StatusOr<Flow> ExecStatement(const Stmt& s, std::string* out);
  absl::StatusOr<Flow> ExecFor(const Stmt& s, std::string* out);
  absl::Status ExecSet(const Stmt& s, std::string* out);
  absl::StatusOr<Flow> ExecSetBlock(const Stmt& s);
  absl::Status Assign(const Stmt& s, Value value);
  // Binds `targets` to `value`, unpacking when there are several.
  absl::Status Bind(const std::vector<std::string>& targets, const Value& value, int line);
  absl::Status Append(std::string* out, std::string_view text, int line);
  Value LoopObject(const std::vector<Value>& items, size_t i);

  Value context_;
  RenderState state_;
  Scope scope_;
  ExpressionEvaluator eval_;
};

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_TEMPLATE_RENDERER_H_
