// jinja2's tests (`x is defined`, `n is divisibleby 3`, ...) over template
// values. Pure functions of their arguments and the RenderState they charge.
#ifndef ADAPTERD_SERVER_TEMPLATE_TEMPLATE_TESTS_H_
#define ADAPTERD_SERVER_TEMPLATE_TEMPLATE_TESTS_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "server/template/call_args.h"
#include "server/template/render_state.h"
#include "server/template/template_value.h"

namespace adapterd::tmpl {

// Whether `name` is a test of the supported subset.
bool IsSupportedTest(std::string_view name);

// `value is name(args)`; errors carry Python's wording without a position.
absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& value, const CallArgs& args,
                               RenderState& state);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_TEMPLATE_TESTS_H_
