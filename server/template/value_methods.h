// The methods templates call on strings, dicts and lists, with Python's
// semantics. As jinja2's ImmutableSandboxedEnvironment does, methods that
// would mutate a list or dict resolve to an Undefined that fails when called
// ("access to attribute 'append' of 'list' object is unsafe."). Python
// methods outside the subset fail when called, naming the method.
// Pure functions of their arguments and the RenderState they charge.
#ifndef ADAPTERD_SERVER_TEMPLATE_VALUE_METHODS_H_
#define ADAPTERD_SERVER_TEMPLATE_VALUE_METHODS_H_

#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/template/call_args.h"
#include "server/template/render_state.h"
#include "server/template/template_value.h"

namespace adapterd::tmpl {

// obj.name when `name` is a method of obj's Python type: a bound method, or
// an unsafe Undefined for mutating ones; nullopt when it is no method.
std::optional<Value> LookupMethod(const Value& obj, std::string_view name);

// Calls the bound method `name` of `receiver`.
absl::StatusOr<Value> CallMethod(const Value& receiver, std::string_view name, const CallArgs& args,
                                 RenderState& state);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_VALUE_METHODS_H_
