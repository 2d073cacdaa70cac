// Python's text forms of template values: str(), repr() and the json.dumps
// call that transformers installs as the `tojson` filter. Pure functions;
// thread-safe.
#ifndef ADAPTERD_SERVER_TEMPLATE_VALUE_FORMAT_H_
#define ADAPTERD_SERVER_TEMPLATE_VALUE_FORMAT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "server/template/template_value.h"

namespace adapterd::tmpl {

// Python float.__repr__ (shortest round-trip digits; "1e+16", "0.0001", "inf").
std::string FloatRepr(double d);
// Python repr() of a str: quotes and escapes as CPython chooses them.
std::string StringRepr(const std::string& s);
// Python str(): strings as they are, everything else as repr(). Printing
// stops once the text passes `max_bytes`, so a result longer than
// `max_bytes` means "too long" (callers check it against their limit).
std::string PyStr(const Value& v, size_t max_bytes = SIZE_MAX);
std::string PyRepr(const Value& v, size_t max_bytes = SIZE_MAX);

// repr() cut to about 200 bytes ("..." marks a cut), for error messages.
std::string ShortRepr(const Value& v);

// json.dumps(x, ensure_ascii, indent, separators, sort_keys) as transformers
// calls it. `indent` holds the indent text (Python turns an int n into n
// spaces); separators default as in Python.
struct JsonOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;
  std::optional<std::string> item_separator;
  std::optional<std::string> key_separator;
  bool sort_keys = false;
};
// TypeError-style message (e.g. "Object of type Undefined is not JSON
// serializable") for values JSON cannot represent.
// Output beyond `max_bytes` is an error naming the limit.
absl::StatusOr<std::string> JsonDumps(const Value& v, const JsonOptions& options,
                                      size_t max_bytes = SIZE_MAX);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_VALUE_FORMAT_H_
