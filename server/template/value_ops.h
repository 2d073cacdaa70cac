// The operations jinja2's sandbox performs on values, with Python's
// semantics: attribute and item access (undefined rather than an error when
// missing), slicing, iteration, len(), `in`, and the arithmetic and string
// operators. Errors carry Python's wording (TypeError, ZeroDivisionError,
// UndefinedError texts) without a position; the evaluator adds the line.
// Integer results beyond 64 bits are an error (Python would widen them).
// Pure functions of their arguments and the RenderState they charge.
#ifndef ADAPTERD_SERVER_TEMPLATE_VALUE_OPS_H_
#define ADAPTERD_SERVER_TEMPLATE_VALUE_OPS_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/template/render_state.h"
#include "server/template/template_value.h"

namespace adapterd::tmpl {

// obj.name: the attribute (a bound method for str/dict/list methods), else
// the item for mappings, else an Undefined that says why. Fails only when
// `obj` itself is undefined.
absl::StatusOr<Value> GetAttr(const Value& obj, std::string_view name);
// obj[key]: the item, else the attribute for string keys, else Undefined.
absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
// obj[start:stop:step]; parts may be None.
absl::StatusOr<Value> GetSlice(const Value& obj, const Value& start, const Value& stop,
                               const Value& step, RenderState& state);

// The items a for loop sees: list and tuple items, dict keys, the characters
// of a string, the rest of an iterator (consuming it), nothing for Undefined.
absl::StatusOr<std::vector<Value>> Iterate(const Value& v, RenderState& state);
// len(v).
absl::StatusOr<int64_t> Length(const Value& v);
// item in container.
absl::StatusOr<bool> Contains(const Value& container, const Value& item, RenderState& state);

// a op b for + - * / // % ** ~.
absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b,
                               RenderState& state);
// -a, +a.
absl::StatusOr<Value> UnaryOp(std::string_view op, const Value& a);

// str(v) within the output limit (charged as work).
absl::StatusOr<std::string> ToText(const Value& v, RenderState& state);

// The undefined value jinja2 gives for a missing attribute or element.
Value MissingAttribute(const Value& obj, std::string_view name);
Value MissingElement(const Value& obj, const Value& key);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_VALUE_OPS_H_
