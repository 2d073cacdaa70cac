#include "server/template/template_filters.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/template/percent_format.h"
#include "server/template/sequence_filters.h"
#include "server/template/text_util.h"
#include "server/template/value_format.h"
#include "server/template/value_methods.h"
#include "server/template/value_ops.h"

namespace adapterd::tmpl {
namespace {

constexpr std::initializer_list<std::string_view> kTextFilters = {
    "capitalize", "center", "e", "escape", "indent", "lower", "replace", "safe",
    "string",     "title",  "trim", "upper", "wordcount"};
constexpr std::initializer_list<std::string_view> kOtherFilters = {
    "abs", "attr", "count", "d", "default", "float", "format", "int", "length", "round", "tojson"};

bool In(std::initializer_list<std::string_view> names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

absl::Status Error(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

std::string Escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&#39;"; break;
      case '"': out += "&#34;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

// jinja2's title filter: the text is split into words and runs of "-",
// whitespace and opening brackets; each piece gets its first character upper
// cased and the rest lower cased.
std::string JinjaTitle(const std::string& s) {
  const auto separator = [](char32_t c) {
    return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || text::IsSpace(c);
  };
  std::string out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t start = pos;
    size_t next = pos;
    const bool sep = separator(text::DecodeAt(s, &next));
    pos = next;
    while (pos < s.size()) {
      size_t after = pos;
      if (separator(text::DecodeAt(s, &after)) != sep) break;
      pos = after;
    }
    const std::string_view piece = std::string_view(s).substr(start, pos - start);
    if (sep) {
      out.append(piece);
      continue;
    }
    size_t first_end = 0;
    text::DecodeAt(piece, &first_end);
    out += text::Upper(piece.substr(0, first_end));
    out += text::Lower(piece.substr(first_end));
  }
  return out;
}

absl::StatusOr<Value> Indent(const Value& v, const std::vector<Value>& a, RenderState& state) {
  if (v.is_undefined()) return Error(v.UndefinedMessage());
  if (!v.is_string()) return Error(absl::StrCat("unsupported operand type(s) for +=: '", v.TypeName(), "' and 'str'"));
  std::string indention;
  if (a[0].is_string()) {
    indention = a[0].AsString();
  } else {
    absl::StatusOr<int64_t> width = IntArg(a[0], "indent width");
    if (!width.ok()) return width.status();
    if (absl::Status s = state.CheckString(std::max<int64_t>(*width, 0)); !s.ok()) return s;
    indention.assign(std::max<int64_t>(*width, 0), ' ');
  }
  const std::vector<std::string> lines = text::SplitLines(v.AsString() + "\n");
  const double size = static_cast<double>(v.AsString().size()) +
                      static_cast<double>(lines.size() + 1) * static_cast<double>(indention.size() + 1);
  if (size > static_cast<double>(state.limits().max_output_bytes)) return state.CheckString(SIZE_MAX);
  if (absl::Status s = state.CheckString(static_cast<size_t>(size)); !s.ok()) return s;
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += '\n';
    const bool indent_line = a[2].Truthy() ? i > 0 : (i > 0 && !lines[i].empty());
    if (indent_line) out += indention;
    out += lines[i];
  }
  if (a[1].Truthy()) out = indention + out;
  return Value::String(std::move(out));
}

absl::StatusOr<Value> TextFilter(std::string_view name, const Value& v, const CallArgs& args,
                                 RenderState& state) {
  const std::string what = absl::StrCat("filter \"", std::string(name), "\"");
  if (name == "indent") {
    absl::StatusOr<std::vector<Value>> a = BindArgs(
        args, {{"width", Value::Int(4)}, {"first", Value::Bool(false)}, {"blank", Value::Bool(false)}}, what);
    if (!a.ok()) return a.status();
    return Indent(v, *a, state);
  }
  absl::StatusOr<std::string> text = ToText(v, state);
  if (!text.ok()) return text.status();
  const std::string& s = *text;
  if (absl::Status c = state.CheckString(s.size() * 2); !c.ok()) return c;
  if (name == "replace") {
    absl::StatusOr<std::vector<Value>> a =
        BindArgs(args, {{"old", std::nullopt}, {"new", std::nullopt}, {"count", Value::None()}}, what);
    if (!a.ok()) return a.status();
    CallArgs method;
    absl::StatusOr<std::string> old_text = ToText((*a)[0], state);
    if (!old_text.ok()) return old_text.status();
    absl::StatusOr<std::string> new_text = ToText((*a)[1], state);
    if (!new_text.ok()) return new_text.status();
    method.positional = {Value::String(std::move(*old_text)), Value::String(std::move(*new_text))};
    if (!(*a)[2].is_none()) method.positional.push_back((*a)[2]);
    return CallMethod(Value::String(s), "replace", method, state);
  }
  if (name == "trim") {
    absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"chars", Value::None()}}, what);
    if (!a.ok()) return a.status();
    CallArgs method;
    method.positional = {(*a)[0]};
    return CallMethod(Value::String(s), "strip", method, state);
  }
  if (name == "center") {
    absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"width", Value::Int(80)}}, what);
    if (!a.ok()) return a.status();
    absl::StatusOr<int64_t> width = IntArg((*a)[0], "center width");
    if (!width.ok()) return width.status();
    const int64_t len = static_cast<int64_t>(text::CodePointCount(s));
    if (*width <= len) return Value::String(s);
    if (absl::Status c = state.CheckString(static_cast<size_t>(*width - len) + s.size()); !c.ok()) return c;
    const int64_t marg = *width - len;
    const int64_t left = marg / 2 + (marg & *width & 1);
    return Value::String(std::string(left, ' ') + s + std::string(marg - left, ' '));
  }
  if (absl::StatusOr<std::vector<Value>> a = BindArgs(args, {}, what); !a.ok()) return a.status();
  if (name == "upper") return Value::String(text::Upper(s));
  if (name == "lower") return Value::String(text::Lower(s));
  if (name == "title") return Value::String(JinjaTitle(s));
  if (name == "capitalize") return Value::String(text::Capitalize(s));
  if (name == "e" || name == "escape") return Value::String(Escape(s));
  if (name == "wordcount") {
    int64_t words = 0;
    bool in_word = false;
    size_t pos = 0;
    while (pos < s.size()) {
      const char32_t c = text::DecodeAt(s, &pos);
      const bool w = text::IsAlnum(c) || c == '_';
      if (w && !in_word) ++words;
      in_word = w;
    }
    return Value::Int(words);
  }
  return Value::String(s);  // string, safe
}

// Python int(str, base); nullopt when the text is no integer literal.
std::optional<int64_t> ParseInt(const std::string& text_in, int64_t base, bool* overflow) {
  std::string t = text::Strip(text_in, nullptr, true, true);
  bool negative = false;
  if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
    negative = t[0] == '-';
    t.erase(0, 1);
  }
  if (t.size() >= 2 && t[0] == '0') {
    const char p = t[1] | 0x20;
    if ((p == 'x' && base == 16) || (p == 'o' && base == 8) || (p == 'b' && base == 2)) {
      t.erase(0, 2);
      if (!t.empty() && t[0] == '_') t.erase(0, 1);
    }
  }
  if (t.empty() || base < 2 || base > 36) return std::nullopt;
  uint64_t value = 0;
  bool last_underscore = true;
  for (char c : t) {
    if (c == '_') {
      if (last_underscore) return std::nullopt;
      last_underscore = true;
      continue;
    }
    last_underscore = false;
    int d = c >= '0' && c <= '9' ? c - '0' : ((c | 0x20) >= 'a' && (c | 0x20) <= 'z' ? (c | 0x20) - 'a' + 10 : 99);
    if (d >= base) return std::nullopt;
    if (value > (static_cast<uint64_t>(INT64_MAX) - d) / base) *overflow = true;
    value = *overflow ? 0 : value * base + d;
  }
  if (last_underscore) return std::nullopt;
  return negative ? -static_cast<int64_t>(value) : static_cast<int64_t>(value);
}

// Python float(str); nullopt when the text is no float literal.
std::optional<double> ParseFloat(const std::string& text_in) {
  std::string t = text::Lower(text::Strip(text_in, nullptr, true, true));
  std::string body = t;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) body.erase(0, 1);
  if (body == "inf" || body == "infinity" || body == "nan") {
    return std::strtod(t.c_str(), nullptr);
  }
  std::string clean;
  bool digits = false, prev_digit = false, exp = false;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    const bool is_digit = c >= '0' && c <= '9';
    if (c == '_') {
      if (!prev_digit || i + 1 >= t.size() || !(t[i + 1] >= '0' && t[i + 1] <= '9')) return std::nullopt;
      continue;
    }
    if (!is_digit && c != '.' && c != 'e' && c != '+' && c != '-') return std::nullopt;
    if (c == 'e') exp = true;
    if (is_digit && !exp) digits = true;
    prev_digit = is_digit;
    clean.push_back(c);
  }
  if (!digits) return std::nullopt;
  char* end = nullptr;
  const double d = std::strtod(clean.c_str(), &end);
  if (end == nullptr || *end != '\0' || clean.find_first_of("xp") != std::string::npos) return std::nullopt;
  return d;
}

absl::StatusOr<Value> ToInt(const Value& v, const std::vector<Value>& a) {
  if (v.is_undefined()) return Error(v.UndefinedMessage());
  bool overflow = false;
  if (v.is_string()) {
    absl::StatusOr<int64_t> base = IntArg(a[1], "int base");
    if (!base.ok()) return base.status();
    if (std::optional<int64_t> i = ParseInt(v.AsString(), *base, &overflow); i && !overflow) return Value::Int(*i);
    if (overflow) return Error("integers beyond 64 bits are not supported");
    std::optional<double> d = ParseFloat(v.AsString());
    if (!d || std::isnan(*d)) return a[0];
    if (std::isinf(*d)) return a[0];
    if (std::fabs(*d) >= 9.2e18) return Error("integers beyond 64 bits are not supported");
    return Value::Int(static_cast<int64_t>(*d));
  }
  if (v.is_int() || v.kind() == Value::Kind::kBool) return Value::Int(v.AsInt());
  if (v.kind() == Value::Kind::kFloat) {
    const double d = v.AsDouble();
    if (std::isnan(d)) return a[0];
    if (std::isinf(d)) return Error("cannot convert float infinity to integer");
    if (std::fabs(d) >= 9.2e18) return Error("integers beyond 64 bits are not supported");
    return Value::Int(static_cast<int64_t>(d));
  }
  return a[0];
}

absl::StatusOr<Value> ToFloat(const Value& v, const std::vector<Value>& a) {
  if (v.is_undefined()) return Error(v.UndefinedMessage());
  if (v.is_number()) return Value::Float(v.AsDouble());
  if (v.is_string()) {
    if (std::optional<double> d = ParseFloat(v.AsString())) return Value::Float(*d);
  }
  return a[0];
}

absl::StatusOr<Value> Round(const Value& v, const std::vector<Value>& a) {
  if (!a[1].is_string() || (a[1].AsString() != "common" && a[1].AsString() != "ceil" &&
                            a[1].AsString() != "floor")) {
    return Error("method must be common, ceil or floor");
  }
  if (!v.is_number()) return Error(absl::StrCat("type ", v.TypeName(), " doesn't define __round__ method"));
  absl::StatusOr<int64_t> precision = IntArg(a[0], "round precision");
  if (!precision.ok()) return precision.status();
  const std::string& method = a[1].AsString();
  if (method == "common" && v.kind() != Value::Kind::kFloat) {
    if (*precision >= 0) return Value::Int(v.AsInt());
    return Error("round() of an integer with a negative precision is not supported");
  }
  const double x = v.AsDouble();
  if (method == "common") {
    if (*precision < 0) return Error("round() with a negative precision is not supported");
    if (*precision > 330 || !std::isfinite(x)) return Value::Float(x);
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(*precision), x);
    return Value::Float(std::strtod(buf, nullptr));
  }
  if (*precision > 330 || *precision < -330) return Error("round() precision out of range");
  const double scale = std::pow(10.0, static_cast<double>(*precision));
  const double scaled = x * scale;
  if (std::isnan(scaled)) return Error("cannot convert float NaN to integer");
  if (std::isinf(scaled)) return Error("cannot convert float infinity to integer");
  // math.ceil and math.floor return ints, so -0.0 comes back as 0.
  const double r = (method == "ceil" ? std::ceil(scaled) : std::floor(scaled)) + 0.0;
  return Value::Float(r / scale);
}

absl::StatusOr<Value> ToJson(const Value& v, const std::vector<Value>& a, RenderState& state) {
  JsonOptions o;
  o.ensure_ascii = a[0].Truthy();
  if (a[1].is_string()) {
    o.indent = a[1].AsString();
  } else if (!a[1].is_none()) {
    absl::StatusOr<int64_t> n = IntArg(a[1], "tojson indent");
    if (!n.ok()) return n.status();
    if (absl::Status s = state.CheckString(std::max<int64_t>(*n, 0)); !s.ok()) return s;
    o.indent = std::string(std::max<int64_t>(*n, 0), ' ');
  }
  if (!a[2].is_none()) {
    if (!a[2].is_list() || a[2].AsList().items.size() != 2 || !a[2].AsList().items[0].is_string() ||
        !a[2].AsList().items[1].is_string()) {
      return Error("tojson separators must be a pair of strings");
    }
    o.item_separator = a[2].AsList().items[0].AsString();
    o.key_separator = a[2].AsList().items[1].AsString();
  }
  o.sort_keys = a[3].Truthy();
  absl::StatusOr<std::string> json = JsonDumps(v, o, state.limits().max_output_bytes);
  if (!json.ok()) return json.status();
  if (absl::Status s = state.CheckString(json->size()); !s.ok()) return s;
  return Value::String(std::move(*json));
}

absl::StatusOr<Value> OtherFilter(std::string_view name, const Value& v, const CallArgs& args,
                                  RenderState& state) {
  const std::string what = absl::StrCat("filter \"", std::string(name), "\"");
  if (name == "default" || name == "d") {
    absl::StatusOr<std::vector<Value>> a =
        BindArgs(args, {{"default_value", Value::String("")}, {"boolean", Value::Bool(false)}}, what);
    if (!a.ok()) return a.status();
    return v.is_undefined() || ((*a)[1].Truthy() && !v.Truthy()) ? (*a)[0] : v;
  }
  if (name == "int") {
    absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"default", Value::Int(0)}, {"base", Value::Int(10)}}, what);
    return a.ok() ? ToInt(v, *a) : a.status();
  }
  if (name == "float") {
    absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"default", Value::Float(0.0)}}, what);
    return a.ok() ? ToFloat(v, *a) : a.status();
  }
  if (name == "round") {
    absl::StatusOr<std::vector<Value>> a =
        BindArgs(args, {{"precision", Value::Int(0)}, {"method", Value::String("common")}}, what);
    return a.ok() ? Round(v, *a) : a.status();
  }
  if (name == "tojson") {
    absl::StatusOr<std::vector<Value>> a =
        BindArgs(args, {{"ensure_ascii", Value::Bool(false)}, {"indent", Value::None()},
                        {"separators", Value::None()}, {"sort_keys", Value::Bool(false)}}, what);
    return a.ok() ? ToJson(v, *a, state) : a.status();
  }
  if (name == "format") {  // value % (kwargs or args)
    if (!args.positional.empty() && !args.keyword.empty()) {
      return Error("can't handle positional and keyword arguments at the same time");
    }
    absl::StatusOr<std::string> format = ToText(v, state);
    if (!format.ok()) return format.status();
    std::vector<std::pair<Value, Value>> kwargs;
    for (const auto& [k, val] : args.keyword) kwargs.emplace_back(Value::String(k), val);
    absl::StatusOr<std::string> s = PercentFormat(
        *format, kwargs.empty() ? Value::List(args.positional, /*is_tuple=*/true) : Value::Dict(std::move(kwargs)), state);
    if (!s.ok()) return s.status();
    return Value::String(std::move(*s));
  }
  if (name == "attr") {
    absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"name", std::nullopt}}, what);
    if (!a.ok()) return a.status();
    absl::StatusOr<std::string> attr = StringArg((*a)[0], "attr name");
    if (!attr.ok()) return attr.status();
    if (v.is_dict()) {  // attributes only: a dict's keys are not attributes
      if (std::optional<Value> m = LookupMethod(v, *attr)) return *m;
      return MissingAttribute(v, *attr);
    }
    return GetAttr(v, *attr);
  }
  if (absl::StatusOr<std::vector<Value>> a = BindArgs(args, {}, what); !a.ok()) return a.status();
  if (name == "length" || name == "count") {
    absl::StatusOr<int64_t> n = Length(v);
    return n.ok() ? absl::StatusOr<Value>(Value::Int(*n)) : n.status();
  }
  // abs
  if (v.kind() == Value::Kind::kFloat) return Value::Float(std::fabs(v.AsDouble()));
  if (!v.is_number()) return Error(absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
  if (v.AsInt() == INT64_MIN) return Error("integer overflow in abs()");
  return Value::Int(v.AsInt() < 0 ? -v.AsInt() : v.AsInt());
}

}  // namespace

bool IsSupportedFilter(std::string_view name) {
  return In(kTextFilters, name) || In(kOtherFilters, name) || IsSequenceFilter(name);
}

absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& value, const CallArgs& args,
                                  RenderState& state) {
  if (In(kTextFilters, name)) return TextFilter(name, value, args, state);
  if (In(kOtherFilters, name)) return OtherFilter(name, value, args, state);
  if (IsSequenceFilter(name)) return ApplySequenceFilter(name, value, args, state);
  return Error(absl::StrCat("filter \"", std::string(name), "\" is not supported"));
}

}  // namespace adapterd::tmpl
