// The evaluated arguments of a call, filter or test, and Python-style binding
// of them to named parameters with defaults. Plain values; thread-compatible.
#ifndef ADAPTERD_SERVER_TEMPLATE_CALL_ARGS_H_
#define ADAPTERD_SERVER_TEMPLATE_CALL_ARGS_H_

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/template/template_value.h"

namespace adapterd::tmpl {

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  bool empty() const { return positional.empty() && keyword.empty(); }
};

// A parameter: its name and, unless required, its default.
struct Param {
  const char* name;
  std::optional<Value> default_value;  // nullopt: required
};

// Binds `args` to `params` as Python binds a call to a signature; `what`
// names the callee in errors ("filter \"join\""). The result has one Value
// per parameter, in order.
absl::StatusOr<std::vector<Value>> BindArgs(const CallArgs& args, std::initializer_list<Param> params,
                                            std::string_view what);

// An int argument (Python accepts bool too); `what` names it in errors.
absl::StatusOr<int64_t> IntArg(const Value& v, std::string_view what);
// A str argument.
absl::StatusOr<std::string> StringArg(const Value& v, std::string_view what);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_CALL_ARGS_H_
