// Python's printf-style string formatting, `format % args`, as the `%`
// operator on strings and jinja2's `format` filter use it: conversions
// s r d i u x X o c e E f F g G and %%, the flags - + space # 0, width and
// precision (also `*`), and %(key)s lookups in a mapping. Errors carry
// Python's wording. Pure function of its arguments and the RenderState it
// charges.
#ifndef ADAPTERD_SERVER_TEMPLATE_PERCENT_FORMAT_H_
#define ADAPTERD_SERVER_TEMPLATE_PERCENT_FORMAT_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/template/render_state.h"
#include "server/template/template_value.h"

namespace adapterd::tmpl {

// `args` is a tuple of positional values, or one value (which may also be
// the mapping of %(key)s lookups).
absl::StatusOr<std::string> PercentFormat(const std::string& format, const Value& args, RenderState& state);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_PERCENT_FORMAT_H_
