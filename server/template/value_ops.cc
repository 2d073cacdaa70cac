#include "server/template/value_ops.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/template/percent_format.h"
#include "server/template/text_util.h"
#include "server/template/value_format.h"
#include "server/template/value_methods.h"

namespace adapterd::tmpl {
namespace {

absl::Status TypeError(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

absl::Status UndefinedError(const Value& v) { return absl::InvalidArgumentError(v.UndefinedMessage()); }

bool IsDunder(std::string_view name) {
  return name.size() > 4 && name.substr(0, 2) == "__" && name.substr(name.size() - 2) == "__";
}

bool IsIntLike(const Value& v) { return v.kind() == Value::Kind::kInt || v.kind() == Value::Kind::kBool; }

// The code point at index i (may be negative) of s, or nullopt when out of range.
std::optional<std::string> CharAt(const std::string& s, int64_t i) {
  if (text::IsAscii(s)) {
    const int64_t n = static_cast<int64_t>(s.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return std::nullopt;
    return std::string(1, s[i]);
  }
  const std::u32string u = text::Decode(s);
  const int64_t n = static_cast<int64_t>(u.size());
  if (i < 0) i += n;
  if (i < 0 || i >= n) return std::nullopt;
  return text::Encode(std::u32string_view(u).substr(i, 1));
}

absl::StatusOr<Value> Repeat(const Value& seq, int64_t n, RenderState& state) {
  if (n < 0) n = 0;
  if (seq.is_string()) {
    const std::string& s = seq.AsString();
    if (!s.empty() && static_cast<uint64_t>(n) > (uint64_t{1} << 40) / s.size()) {
      return state.CheckString(uint64_t{1} << 40);
    }
    if (absl::Status st = state.CheckString(s.size() * n); !st.ok()) return st;
    std::string out;
    out.reserve(s.size() * n);
    for (int64_t i = 0; i < n; ++i) out += s;
    return Value::String(std::move(out));
  }
  const ListData& l = seq.AsList();
  if (!l.items.empty() && static_cast<uint64_t>(n) > (uint64_t{1} << 40) / l.items.size()) {
    return state.CheckItems(uint64_t{1} << 40);
  }
  if (absl::Status st = state.CheckItems(l.items.size() * n); !st.ok()) return st;
  std::vector<Value> out;
  out.reserve(l.items.size() * n);
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), l.items.begin(), l.items.end());
  Value v = Value::List(std::move(out), l.is_tuple);
  if (absl::Status st = state.CheckValue(v); !st.ok()) return st;
  return v;
}

absl::Status Unsupported(std::string_view op, const Value& a, const Value& b) {
  return TypeError(absl::StrCat("unsupported operand type(s) for ", std::string(op), ": '", a.TypeName(), "' and '",
                                b.TypeName(), "'"));
}

// Python's float floor division and modulo (Objects/floatobject.c).
void FloatDivMod(double a, double b, double* div_out, double* mod_out) {
  double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0) {
    if ((b < 0) != (mod < 0)) {
      mod += b;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, b);
  }
  double floordiv;
  if (div != 0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, a / b);
  }
  *div_out = floordiv;
  *mod_out = mod;
}

absl::StatusOr<Value> IntPow(int64_t base, int64_t exp) {
  int64_t result = 1;
  while (exp > 0) {
    if (exp & 1) {
      if (__builtin_mul_overflow(result, base, &result)) return TypeError("integer overflow in \"**\"");
    }
    exp >>= 1;
    if (exp > 0 && __builtin_mul_overflow(base, base, &base)) {
      return TypeError("integer overflow in \"**\"");
    }
  }
  return Value::Int(result);
}

absl::StatusOr<Value> Arithmetic(std::string_view op, const Value& a, const Value& b) {
  const bool ints = IsIntLike(a) && IsIntLike(b);
  if (ints) {
    const int64_t x = a.AsInt(), y = b.AsInt();
    int64_t r;
    if (op == "+" || op == "-" || op == "*") {
      const bool overflow = op == "+" ? __builtin_add_overflow(x, y, &r)
                                      : (op == "-" ? __builtin_sub_overflow(x, y, &r)
                                                   : __builtin_mul_overflow(x, y, &r));
      if (overflow) return TypeError(absl::StrCat("integer overflow in \"", std::string(op), "\""));
      return Value::Int(r);
    }
    if (op == "//" || op == "%") {
      if (y == 0) return TypeError("integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) return TypeError(absl::StrCat("integer overflow in \"", std::string(op), "\""));
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {
        m += y;
        q -= 1;
      }
      return Value::Int(op == "//" ? q : m);
    }
    if (op == "**" && y >= 0) return IntPow(x, y);
  }
  const double x = a.AsDouble(), y = b.AsDouble();
  if (op == "+") return Value::Float(x + y);
  if (op == "-") return Value::Float(x - y);
  if (op == "*") return Value::Float(x * y);
  if (op == "/") {
    if (y == 0) return TypeError(ints ? "division by zero" : "float division by zero");
    return Value::Float(x / y);
  }
  if (op == "//" || op == "%") {
    if (y == 0) return TypeError(op == "//" ? "float floor division by zero" : "float modulo");
    double div, mod;
    FloatDivMod(x, y, &div, &mod);
    return Value::Float(op == "//" ? div : mod);
  }
  // "**"
  if (x == 0 && y < 0) return TypeError("0.0 cannot be raised to a negative power");
  if (x < 0 && y != std::floor(y)) return TypeError("\"**\" with a complex result is not supported");
  return Value::Float(std::pow(x, y));
}

}  // namespace

absl::StatusOr<std::string> ToText(const Value& v, RenderState& state) {
  if (v.is_string()) return v.AsString();
  std::string s = PyStr(v, static_cast<size_t>(state.limits().max_output_bytes));
  if (absl::Status st = state.CheckString(s.size()); !st.ok()) return st;
  return s;
}

Value MissingAttribute(const Value& obj, std::string_view name) {
  return Value::Undefined(absl::StrCat(obj.is_none() ? "'None'" : StringRepr(ObjectTypeRepr(obj)),
                                       " has no attribute ", ShortRepr(Value::String(std::string(name)))));
}

Value MissingElement(const Value& obj, const Value& key) {
  if (key.is_string()) return MissingAttribute(obj, key.AsString());
  return Value::Undefined(absl::StrCat(ObjectTypeRepr(obj), " has no element ", ShortRepr(key)));
}

absl::StatusOr<Value> GetAttr(const Value& obj, std::string_view name) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (IsDunder(name)) {
    return Value::Undefined(absl::StrCat("access to attribute ", StringRepr(std::string(name)), " of ",
                                         StringRepr(obj.TypeName()), " object is unsafe."));
  }
  if (std::optional<Value> method = LookupMethod(obj, name)) return *method;
  switch (obj.kind()) {
    case Value::Kind::kDict:
    case Value::Kind::kLoop:
      if (const Value* v = obj.AsDict().FindString(name)) return *v;
      break;
    case Value::Kind::kNamespace:
      if (const Value* v = obj.AsNamespace()->Find(name)) return *v;
      break;
    default: break;
  }
  return MissingAttribute(obj, name);
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return UndefinedError(obj);
  switch (obj.kind()) {
    case Value::Kind::kList:
      if (IsIntLike(key) && obj.AsList().flavor <= ListFlavor::kRange) {
        const auto& items = obj.AsList().items;
        int64_t i = key.AsInt();
        if (i < 0) i += static_cast<int64_t>(items.size());
        if (i >= 0 && i < static_cast<int64_t>(items.size())) return items[i];
        return MissingElement(obj, key);
      }
      break;
    case Value::Kind::kString:
      if (IsIntLike(key)) {
        if (std::optional<std::string> c = CharAt(obj.AsString(), key.AsInt())) {
          return Value::String(std::move(*c));
        }
        return MissingElement(obj, key);
      }
      break;
    case Value::Kind::kDict:
      if (IsHashable(key)) {
        if (const Value* v = obj.AsDict().Find(key)) return *v;
      }
      break;
    default: break;
  }
  if (key.is_string()) return GetAttr(obj, key.AsString());
  return MissingElement(obj, key);
}

absl::StatusOr<Value> GetSlice(const Value& obj, const Value& start_v, const Value& stop_v,
                               const Value& step_v, RenderState& state) {
  if (obj.is_undefined()) return UndefinedError(obj);
  const auto index_or_none = [](const Value& v) { return v.is_none() || IsIntLike(v); };
  const bool sliceable = obj.is_string() || (obj.is_list() && obj.AsList().flavor <= ListFlavor::kRange);
  if (!sliceable || !index_or_none(start_v) || !index_or_none(stop_v) || !index_or_none(step_v)) {
    return Value::Undefined(absl::StrCat(ObjectTypeRepr(obj), " has no element slice(", ShortRepr(start_v),
                                         ", ", ShortRepr(stop_v), ", ", ShortRepr(step_v), ")"));
  }
  const int64_t step = step_v.is_none() ? 1 : step_v.AsInt();
  if (step == 0) return TypeError("slice step cannot be zero");
  std::u32string chars;
  const bool ascii = obj.is_string() && text::IsAscii(obj.AsString());
  if (obj.is_string() && !ascii) chars = text::Decode(obj.AsString());
  const int64_t len = obj.is_list() ? static_cast<int64_t>(obj.AsList().items.size())
                                    : (ascii ? static_cast<int64_t>(obj.AsString().size())
                                             : static_cast<int64_t>(chars.size()));
  const auto adjust = [&](const Value& v, int64_t def) {
    if (v.is_none()) return def;
    int64_t i = v.AsInt();
    if (i < 0) {
      i += len;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= len) {
      i = step < 0 ? len - 1 : len;
    }
    return i;
  };
  const int64_t start = adjust(start_v, step < 0 ? len - 1 : 0);
  const int64_t stop = adjust(stop_v, step < 0 ? -1 : len);
  const int64_t count = step < 0 ? (stop < start ? (start - stop - 1) / (-step) + 1 : 0)
                                 : (start < stop ? (stop - start - 1) / step + 1 : 0);
  if (absl::Status s = state.CheckItems(static_cast<size_t>(count)); !s.ok()) return s;
  if (obj.is_list()) {
    std::vector<Value> out;
    out.reserve(count);
    for (int64_t k = 0, i = start; k < count; ++k, i += step) out.push_back(obj.AsList().items[i]);
    return Value::List(std::move(out), obj.AsList().is_tuple);
  }
  std::string out;
  for (int64_t k = 0, i = start; k < count; ++k, i += step) {
    if (ascii) {
      out.push_back(obj.AsString()[i]);
    } else {
      text::AppendUtf8(chars[i], &out);
    }
  }
  return Value::String(std::move(out));
}

absl::StatusOr<std::vector<Value>> Iterate(const Value& v, RenderState& state) {
  std::vector<Value> out;
  switch (v.kind()) {
    case Value::Kind::kUndefined: return out;
    case Value::Kind::kList: out = v.AsList().items; break;
    case Value::Kind::kDict:
      out.reserve(v.AsDict().entries.size());
      for (const auto& [k, item] : v.AsDict().entries) out.push_back(k);
      break;
    case Value::Kind::kString: {
      const std::string& s = v.AsString();
      size_t pos = 0;
      while (pos < s.size()) {
        const size_t start = pos;
        text::DecodeAt(s, &pos);
        out.push_back(Value::String(s.substr(start, pos - start)));
      }
      break;
    }
    case Value::Kind::kIterator: {
      IteratorData& it = v.AsIterator();
      if (!it.pending_error.empty()) return TypeError(it.pending_error);
      out.assign(it.items.begin() + static_cast<std::ptrdiff_t>(std::min(it.position, it.items.size())),
                 it.items.end());
      it.position = it.items.size();
      break;
    }
    default: return TypeError(absl::StrCat("'", v.TypeName(), "' object is not iterable"));
  }
  if (absl::Status s = state.Charge(static_cast<int64_t>(out.size())); !s.ok()) return s;
  return out;
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return 0;
    case Value::Kind::kList: return static_cast<int64_t>(v.AsList().items.size());
    case Value::Kind::kDict: return static_cast<int64_t>(v.AsDict().entries.size());
    case Value::Kind::kString: return static_cast<int64_t>(text::CodePointCount(v.AsString()));
    case Value::Kind::kLoop: {
      const Value* n = v.AsDict().FindString("length");
      return n ? n->AsInt() : 0;
    }
    default: return TypeError(absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
  }
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item, RenderState& state) {
  switch (container.kind()) {
    case Value::Kind::kString:
      if (!item.is_string()) {
        if (item.is_undefined()) return UndefinedError(item);
        return TypeError(absl::StrCat("'in <string>' requires string as left operand, not ",
                                      item.TypeName()));
      }
      if (absl::Status s = state.Charge(static_cast<int64_t>(container.AsString().size())); !s.ok()) {
        return s;
      }
      return text::Find(container.AsString(), item.AsString(), 0) != std::string::npos;
    case Value::Kind::kDict:
      if (!IsHashable(item)) return TypeError(absl::StrCat("unhashable type: '", item.TypeName(), "'"));
      return container.AsDict().Find(item) != nullptr;
    case Value::Kind::kList:
      if (container.AsList().flavor == ListFlavor::kDictItems) {
        // (key, value) pairs only; the key must be hashable.
        if (!item.is_plain_list() || !item.AsList().is_tuple || item.AsList().items.size() != 2) return false;
        if (!IsHashable(item.AsList().items[0])) {
          return TypeError(absl::StrCat("unhashable type: '", item.AsList().items[0].TypeName(), "'"));
        }
      }
      if (container.AsList().flavor == ListFlavor::kDictKeys && !IsHashable(item)) {
        return TypeError(absl::StrCat("unhashable type: '", item.TypeName(), "'"));
      }
      [[fallthrough]];
    case Value::Kind::kIterator:
    case Value::Kind::kUndefined: {
      absl::StatusOr<std::vector<Value>> items = Iterate(container, state);
      if (!items.ok()) return items.status();
      for (const Value& v : *items) {
        if (PyEquals(v, item)) return true;
      }
      return false;
    }
    default:
      return TypeError(absl::StrCat("argument of type '", container.TypeName(), "' is not iterable"));
  }
}

absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b, RenderState& state) {
  if (op == "~") {
    absl::StatusOr<std::string> left = ToText(a, state);
    if (!left.ok()) return left.status();
    absl::StatusOr<std::string> right = ToText(b, state);
    if (!right.ok()) return right.status();
    if (absl::Status s = state.CheckString(left->size() + right->size()); !s.ok()) return s;
    *left += *right;
    return Value::String(std::move(*left));
  }
  if (op == "%" && a.is_string()) {  // str % anything, Undefined included (it is a mapping)
    absl::StatusOr<std::string> s = PercentFormat(a.AsString(), b, state);
    if (!s.ok()) return s.status();
    return Value::String(std::move(*s));
  }
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (a.is_number() && b.is_number()) return Arithmetic(op, a, b);
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (absl::Status s = state.CheckString(a.AsString().size() + b.AsString().size()); !s.ok()) return s;
      return Value::String(a.AsString() + b.AsString());
    }
    if (a.is_plain_list() && b.is_plain_list() && a.AsList().is_tuple == b.AsList().is_tuple) {
      const auto& x = a.AsList().items;
      const auto& y = b.AsList().items;
      if (absl::Status s = state.CheckItems(x.size() + y.size()); !s.ok()) return s;
      std::vector<Value> out(x);
      out.insert(out.end(), y.begin(), y.end());
      Value v = Value::List(std::move(out), a.AsList().is_tuple);
      if (absl::Status s = state.CheckValue(v); !s.ok()) return s;
      return v;
    }
    if (a.is_string() || a.is_plain_list()) {
      return TypeError(absl::StrCat("can only concatenate ", a.TypeName(), " (not \"", b.TypeName(),
                                    "\") to ", a.TypeName()));
    }
  }
  if (op == "*") {
    const auto seq = [](const Value& v) { return v.is_string() || v.is_plain_list(); };
    if (seq(a) && IsIntLike(b)) return Repeat(a, b.AsInt(), state);
    if (seq(b) && IsIntLike(a)) return Repeat(b, a.AsInt(), state);
    if (seq(a) || seq(b)) {
      const Value& other = seq(a) ? b : a;
      return TypeError(absl::StrCat("can't multiply sequence by non-int of type '", other.TypeName(), "'"));
    }
  }
  return Unsupported(op, a, b);
}

absl::StatusOr<Value> UnaryOp(std::string_view op, const Value& a) {
  if (a.is_undefined()) return UndefinedError(a);
  if (!a.is_number()) {
    return TypeError(absl::StrCat("bad operand type for unary ", std::string(op), ": '", a.TypeName(), "'"));
  }
  if (a.kind() == Value::Kind::kFloat) return Value::Float(op == "-" ? -a.AsDouble() : a.AsDouble());
  const int64_t i = a.AsInt();
  if (op == "+") return Value::Int(i);
  if (i == INT64_MIN) return TypeError("integer overflow in unary \"-\"");
  return Value::Int(-i);
}

}  // namespace adapterd::tmpl
