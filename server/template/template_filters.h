// jinja2's filters (`x|trim`, `tools|tojson(indent=4)`, ...) over template
// values, with transformers' `tojson` (json.dumps with ensure_ascii=False).
// map, select, reject, selectattr, rejectattr, unique and items return
// one-shot iterators, as jinja2's generators are. Pure functions of their
// arguments and the RenderState they charge.
#ifndef ADAPTERD_SERVER_TEMPLATE_TEMPLATE_FILTERS_H_
#define ADAPTERD_SERVER_TEMPLATE_TEMPLATE_FILTERS_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "server/template/call_args.h"
#include "server/template/render_state.h"
#include "server/template/template_value.h"

namespace adapterd::tmpl {

// Whether `name` is a filter of the supported subset.
bool IsSupportedFilter(std::string_view name);

// `value|name(args)`; errors carry Python's wording without a position.
absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& value, const CallArgs& args,
                                  RenderState& state);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_TEMPLATE_FILTERS_H_
