#include "server/template/percent_format.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/template/text_util.h"
#include "server/template/value_format.h"

namespace adapterd::tmpl {
namespace {

absl::Status Error(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

struct Spec {
  bool left = false, plus = false, space = false, alt = false, zero = false;
  int64_t width = -1, precision = -1;
  char conversion = 's';
};

// The argument source: a tuple's items in order, or one value.
class Args {
 public:
  explicit Args(const Value& args) {
    if (args.is_plain_list() && args.AsList().is_tuple) {
      items_ = args.AsList().items;
    } else {
      items_ = {args};
    }
    const bool mapping = args.is_dict() || args.is_undefined() ||
                         (args.is_list() && !args.AsList().is_tuple && args.AsList().flavor <= ListFlavor::kRange);
    if (mapping) mapping_ = args;
  }
  absl::StatusOr<Value> Next() {
    if (next_ >= items_.size()) return Error("not enough arguments for format string");
    return items_[next_++];
  }
  bool AllUsed() const { return next_ >= items_.size() || mapping_.has_value(); }
  const std::optional<Value>& mapping() const { return mapping_; }

 private:
  std::vector<Value> items_;
  size_t next_ = 0;
  std::optional<Value> mapping_;
};

std::string Pad(std::string body, const Spec& spec, size_t sign_prefix_len) {
  const int64_t len = static_cast<int64_t>(text::CodePointCount(body));
  if (spec.width <= len) return body;
  const size_t fill = static_cast<size_t>(spec.width - len);
  if (spec.left) return body + std::string(fill, ' ');
  if (spec.zero && sign_prefix_len != std::string::npos) {
    return body.substr(0, sign_prefix_len) + std::string(fill, '0') + body.substr(sign_prefix_len);
  }
  return std::string(fill, ' ') + body;
}

absl::StatusOr<std::string> FormatInteger(const Value& v, const Spec& spec) {
  const char c = spec.conversion;
  int64_t n;
  if (v.kind() == Value::Kind::kFloat) {
    if (c == 'x' || c == 'X' || c == 'o') {
      return Error(absl::StrCat("%", std::string(1, c), " format: an integer is required, not float"));
    }
    const double d = v.AsDouble();
    if (std::isnan(d)) return Error("cannot convert float NaN to integer");
    if (std::isinf(d)) return Error("cannot convert float infinity to integer");
    if (std::fabs(d) >= 9.2e18) return Error("integers beyond 64 bits are not supported");
    n = static_cast<int64_t>(d);
  } else if (v.is_number()) {
    n = v.AsInt();
  } else {
    if (v.is_undefined()) return Error(v.UndefinedMessage());
    return Error(absl::StrCat("%", std::string(1, c), " format: ",
                              c == 'd' || c == 'i' || c == 'u' ? "a real number" : "an integer",
                              " is required, not ", v.TypeName()));
  }
  const bool negative = n < 0;
  uint64_t magnitude = negative ? 0 - static_cast<uint64_t>(n) : static_cast<uint64_t>(n);
  const int base = (c == 'x' || c == 'X') ? 16 : (c == 'o' ? 8 : 10);
  std::string digits;
  do {
    const int d = static_cast<int>(magnitude % base);
    digits.insert(digits.begin(), static_cast<char>(d < 10 ? '0' + d : (c == 'X' ? 'A' : 'a') + d - 10));
    magnitude /= base;
  } while (magnitude > 0);
  if (spec.precision > 10000) return Error("precision too big");
  if (spec.precision > static_cast<int64_t>(digits.size())) {
    digits.insert(0, std::string(spec.precision - digits.size(), '0'));
  }
  std::string prefix = negative ? "-" : (spec.plus ? "+" : (spec.space ? " " : ""));
  if (spec.alt && base != 10) prefix += c == 'o' ? "0o" : (c == 'X' ? "0X" : "0x");
  return Pad(prefix + digits, spec, prefix.size());
}

absl::StatusOr<std::string> FormatFloat(const Value& v, const Spec& spec) {
  if (!v.is_number()) {
    if (v.is_undefined()) return Error(v.UndefinedMessage());
    return Error(absl::StrCat("must be real number, not ", v.TypeName()));
  }
  std::string fmt = "%";
  if (spec.left) fmt += '-';
  if (spec.plus) fmt += '+';
  if (spec.space) fmt += ' ';
  if (spec.alt) fmt += '#';
  if (spec.zero) fmt += '0';
  if (spec.width >= 0) absl::StrAppend(&fmt, spec.width);
  absl::StrAppend(&fmt, ".", spec.precision >= 0 ? spec.precision : 6, std::string(1, spec.conversion));
  if (spec.precision > 10000) return Error("precision too big");
  const double d = v.AsDouble();
  const int n = std::snprintf(nullptr, 0, fmt.c_str(), d);
  std::string out(static_cast<size_t>(std::max(n, 0)) + 1, '\0');
  std::snprintf(out.data(), out.size(), fmt.c_str(), d);
  out.resize(static_cast<size_t>(std::max(n, 0)));
  return out;
}

absl::StatusOr<std::string> FormatOne(const Value& v, const Spec& spec, RenderState& state) {
  switch (spec.conversion) {
    case 's':
    case 'r': {
      const size_t room = static_cast<size_t>(state.limits().max_output_bytes);
      std::string s = spec.conversion == 's' ? PyStr(v, room) : PyRepr(v, room);
      if (absl::Status st = state.CheckString(s.size()); !st.ok()) return st;
      if (spec.precision >= 0 && static_cast<size_t>(spec.precision) < text::CodePointCount(s)) {
        s = text::Encode(text::Decode(s).substr(0, spec.precision));
      }
      return Pad(std::move(s), spec, std::string::npos);
    }
    case 'd':
    case 'i':
    case 'u':
    case 'x':
    case 'X':
    case 'o': return FormatInteger(v, spec);
    case 'c': {
      std::string s;
      if (v.is_string() && text::CodePointCount(v.AsString()) == 1) {
        s = v.AsString();
      } else if (v.is_int() || v.kind() == Value::Kind::kBool) {
        if (v.AsInt() < 0 || v.AsInt() > 0x10FFFF) return Error("%c arg not in range(0x110000)");
        text::AppendUtf8(static_cast<char32_t>(v.AsInt()), &s);
      } else {
        return Error("%c requires int or char");
      }
      return Pad(std::move(s), spec, std::string::npos);
    }
    default: return FormatFloat(v, spec);
  }
}

}  // namespace

absl::StatusOr<std::string> PercentFormat(const std::string& format, const Value& args_value,
                                          RenderState& state) {
  Args args(args_value);
  std::string out;
  size_t i = 0;
  while (i < format.size()) {
    if (format[i] != '%') {
      out.push_back(format[i++]);
      continue;
    }
    ++i;
    std::optional<Value> keyed;
    if (i < format.size() && format[i] == '(') {
      int depth = 1;
      const size_t key_start = ++i;
      while (i < format.size() && depth > 0) depth += format[i] == '(' ? 1 : (format[i] == ')' ? -1 : 0), ++i;
      if (depth > 0) return Error("incomplete format key");
      if (!args.mapping()) return Error("format requires a mapping");
      const std::string key = format.substr(key_start, i - key_start - 1);
      const Value& mapping = *args.mapping();  // Python's own subscript, not the sandbox's
      if (mapping.is_undefined()) return Error(mapping.UndefinedMessage());
      if (!mapping.is_dict()) {
        return Error(absl::StrCat(mapping.TypeName(), " indices must be integers or slices, not str"));
      }
      const Value* v = mapping.AsDict().FindString(key);
      if (v == nullptr) return Error(absl::StrCat("KeyError: ", StringRepr(key)));
      keyed = *v;
    }
    Spec spec;
    for (; i < format.size(); ++i) {
      const char f = format[i];
      if (f == '-') spec.left = true;
      else if (f == '+') spec.plus = true;
      else if (f == ' ') spec.space = true;
      else if (f == '#') spec.alt = true;
      else if (f == '0') spec.zero = true;
      else break;
    }
    const auto number = [&](int64_t* into) -> absl::Status {
      if (i < format.size() && format[i] == '*') {
        ++i;
        absl::StatusOr<Value> v = args.Next();
        if (!v.ok()) return v.status();
        if (!v->is_int()) return Error("* wants int");
        *into = v->AsInt();
        return absl::OkStatus();
      }
      if (i >= format.size() || format[i] < '0' || format[i] > '9') return absl::OkStatus();
      *into = 0;
      while (i < format.size() && format[i] >= '0' && format[i] <= '9') {
        *into = std::min<int64_t>(*into * 10 + (format[i++] - '0'), int64_t{1} << 40);
      }
      return absl::OkStatus();
    };
    if (absl::Status s = number(&spec.width); !s.ok()) return s;
    if (spec.width < -1) spec.left = true, spec.width = -spec.width;
    if (i < format.size() && format[i] == '.') {
      ++i;
      spec.precision = 0;
      if (absl::Status s = number(&spec.precision); !s.ok()) return s;
    }
    while (i < format.size() && (format[i] == 'h' || format[i] == 'l' || format[i] == 'L')) ++i;
    if (i >= format.size()) return Error("incomplete format");
    spec.conversion = format[i++];
    if (absl::Status s = state.CheckSize(out.size() + std::max<int64_t>(spec.width, 0)); !s.ok()) return s;
    if (spec.conversion == '%') {
      out.push_back('%');
      continue;
    }
    if (std::string_view("srdiuxXocEeFfGg").find(spec.conversion) == std::string_view::npos) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "unsupported format character '%c' (0x%x) at index %zu", spec.conversion,
                    static_cast<unsigned char>(spec.conversion), i - 1);
      return Error(buf);
    }
    absl::StatusOr<Value> v = keyed ? absl::StatusOr<Value>(*keyed) : args.Next();
    if (!v.ok()) return v.status();
    absl::StatusOr<std::string> piece = FormatOne(*v, spec, state);
    if (!piece.ok()) return piece.status();
    out += *piece;
    if (absl::Status s = state.CheckSize(out.size()); !s.ok()) return s;
  }
  if (!args.AllUsed()) return Error("not all arguments converted during string formatting");
  if (absl::Status s = state.CheckString(out.size()); !s.ok()) return s;
  return out;
}

}  // namespace adapterd::tmpl
