// The jinja2 filters that work on sequences and mappings: first, last, list,
// items, join, reverse, map, select, reject, selectattr, rejectattr, sort,
// unique, dictsort, min, max and sum. Part of template_filters; pure
// functions of their arguments and the RenderState they charge.
#ifndef ADAPTERD_SERVER_TEMPLATE_SEQUENCE_FILTERS_H_
#define ADAPTERD_SERVER_TEMPLATE_SEQUENCE_FILTERS_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "server/template/call_args.h"
#include "server/template/render_state.h"
#include "server/template/template_value.h"

namespace adapterd::tmpl {

bool IsSequenceFilter(std::string_view name);

absl::StatusOr<Value> ApplySequenceFilter(std::string_view name, const Value& value,
                                          const CallArgs& args, RenderState& state);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_SEQUENCE_FILTERS_H_
