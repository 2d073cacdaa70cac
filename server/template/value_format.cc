#include "server/template/value_format.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/template/text_util.h"

namespace adapterd::tmpl {
namespace {

void AppendHex(uint32_t value, int digits, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) out->push_back(kHex[(value >> (4 * i)) & 0xF]);
}

class ReprPrinter {
 public:
  explicit ReprPrinter(size_t max_bytes) : max_(max_bytes) {}
  void Print(const Value& v, std::string* out);

 private:
  void PrintValue(const Value& v, std::string* out);
  void PrintNamespace(NamespaceData* ns, std::string* out);
  size_t max_;
  int depth_ = 0;
  std::vector<const NamespaceData*> open_;  // namespaces being printed (cycle guard)
};

// Values nest at most TemplateLimits::max_value_depth deep, but chains of
// namespaces may go deeper; printing stops there.
constexpr int kMaxReprDepth = 256;

void ReprPrinter::Print(const Value& v, std::string* out) {
  if (out->size() > max_) return;
  if (depth_ >= kMaxReprDepth) {
    out->append("...");
    return;
  }
  ++depth_;
  PrintValue(v, out);
  --depth_;
}

void ReprPrinter::PrintValue(const Value& v, std::string* out) {
  using K = Value::Kind;
  switch (v.kind()) {
    case K::kUndefined: out->append("Undefined"); return;
    case K::kNone: out->append("None"); return;
    case K::kBool: out->append(v.AsBool() ? "True" : "False"); return;
    case K::kInt: absl::StrAppend(out, v.AsInt()); return;
    case K::kFloat: out->append(FloatRepr(v.AsDouble())); return;
    case K::kString: out->append(StringRepr(v.AsString())); return;
    case K::kList: {
      const ListData& l = v.AsList();
      if (l.flavor == ListFlavor::kRange) {
        absl::StrAppend(out, "range(", l.range_start, ", ", l.range_stop);
        if (l.range_step != 1) absl::StrAppend(out, ", ", l.range_step);
        out->push_back(')');
        return;
      }
      if (l.flavor != ListFlavor::kPlain) absl::StrAppend(out, v.TypeName(), "(");
      out->push_back(l.is_tuple ? '(' : '[');
      for (size_t i = 0; i < l.items.size() && out->size() <= max_; ++i) {
        if (i > 0) out->append(", ");
        Print(l.items[i], out);
      }
      if (l.is_tuple && l.items.size() == 1) out->push_back(',');
      out->push_back(l.is_tuple ? ')' : ']');
      if (l.flavor != ListFlavor::kPlain) out->push_back(')');
      return;
    }
    case K::kDict: {
      out->push_back('{');
      bool first = true;
      for (const auto& [key, value] : v.AsDict().entries) {
        if (out->size() > max_) break;
        if (!first) out->append(", ");
        first = false;
        Print(key, out);
        out->append(": ");
        Print(value, out);
      }
      out->push_back('}');
      return;
    }
    case K::kNamespace: PrintNamespace(v.AsNamespace(), out); return;
    case K::kIterator: {
      // Python shows an address here; a fixed one keeps renders repeatable.
      const IteratorData& it = v.AsIterator();
      absl::StrAppend(out, "<", it.type_name, " object", it.function.empty() ? "" : " ", it.function,
                      " at 0x7f0000000000>");
      return;
    }
    case K::kCallable: {
      const CallableData& fn = v.AsCallable();
      if (fn.kind == CallableData::Kind::kMacro) {
        absl::StrAppend(out, "<Macro ", StringRepr(fn.name), ">");
      } else if (fn.kind == CallableData::Kind::kGlobal) {
        absl::StrAppend(out, "<function ", fn.name, ">");
      } else {
        absl::StrAppend(out, "<built-in method ", fn.name, ">");
      }
      return;
    }
    case K::kLoop: {
      const Value* index = v.AsDict().FindString("index");
      const Value* length = v.AsDict().FindString("length");
      absl::StrAppend(out, "<LoopContext ", index ? PyStr(*index) : "?", "/",
                      length ? PyStr(*length) : "?", ">");
      return;
    }
  }
}

void ReprPrinter::PrintNamespace(NamespaceData* ns, std::string* out) {
  out->append("<Namespace ");
  if (std::find(open_.begin(), open_.end(), ns) != open_.end()) {
    out->append("{...}>");
    return;
  }
  open_.push_back(ns);
  out->push_back('{');
  bool first = true;
  for (const auto& [name, value] : ns->attrs) {
    if (!first) out->append(", ");
    first = false;
    out->append(StringRepr(name));
    out->append(": ");
    Print(value, out);
  }
  out->append("}>");
  open_.pop_back();
}

void AppendJsonString(const std::string& s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  size_t pos = 0;
  while (pos < s.size()) {
    const char32_t c = text::DecodeAt(s, &pos);
    switch (c) {
      case '"': out->append("\\\""); continue;
      case '\\': out->append("\\\\"); continue;
      case '\b': out->append("\\b"); continue;
      case '\f': out->append("\\f"); continue;
      case '\n': out->append("\\n"); continue;
      case '\r': out->append("\\r"); continue;
      case '\t': out->append("\\t"); continue;
      default: break;
    }
    if (c < 0x20 || (ensure_ascii && c > 0x7E)) {
      if (c >= 0x10000) {
        const char32_t v = c - 0x10000;
        out->append("\\u");
        AppendHex(0xD800 | (v >> 10), 4, out);
        out->append("\\u");
        AppendHex(0xDC00 | (v & 0x3FF), 4, out);
      } else {
        out->append("\\u");
        AppendHex(c, 4, out);
      }
      continue;
    }
    text::AppendUtf8(c, out);
  }
  out->push_back('"');
}

std::string JsonFloat(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return FloatRepr(d);
}

class JsonEncoder {
 public:
  JsonEncoder(const JsonOptions& o, size_t max_bytes) : o_(o), max_(max_bytes) {
    item_sep_ = o.item_separator ? *o.item_separator : (o.indent ? "," : ", ");
    key_sep_ = o.key_separator ? *o.key_separator : ": ";
  }
  absl::Status Encode(const Value& v, int level, std::string* out);

 private:
  void NewLine(int level, std::string* out) {
    out->push_back('\n');
    for (int i = 0; i < level; ++i) out->append(*o_.indent);
  }
  absl::StatusOr<std::string> Key(const Value& k);
  absl::Status EncodeDict(const DictData& d, int level, std::string* out);

  const JsonOptions& o_;
  size_t max_;
  std::string item_sep_, key_sep_;
};

absl::StatusOr<std::string> JsonEncoder::Key(const Value& k) {
  switch (k.kind()) {
    case Value::Kind::kString: return k.AsString();
    case Value::Kind::kBool: return std::string(k.AsBool() ? "true" : "false");
    case Value::Kind::kNone: return std::string("null");
    case Value::Kind::kInt: return absl::StrCat(k.AsInt());
    case Value::Kind::kFloat: return JsonFloat(k.AsDouble());
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("keys must be str, int, float, bool or None, not ", k.TypeName()));
  }
}

absl::Status JsonEncoder::EncodeDict(const DictData& d, int level, std::string* out) {
  if (d.entries.empty()) {
    out->append("{}");
    return absl::OkStatus();
  }
  std::vector<const std::pair<Value, Value>*> entries;
  for (const auto& e : d.entries) entries.push_back(&e);
  if (o_.sort_keys) {
    absl::Status error;
    std::stable_sort(entries.begin(), entries.end(), [&](const auto* a, const auto* b) {
      absl::StatusOr<int> c = PyCompare(a->first, b->first, "<");
      if (!c.ok()) {
        error.Update(c.status());
        return false;
      }
      return *c < 0;
    });
    if (!error.ok()) return error;
  }
  out->push_back('{');
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) out->append(item_sep_);
    if (o_.indent) NewLine(level + 1, out);
    absl::StatusOr<std::string> key = Key(entries[i]->first);
    if (!key.ok()) return key.status();
    AppendJsonString(*key, o_.ensure_ascii, out);
    out->append(key_sep_);
    if (absl::Status s = Encode(entries[i]->second, level + 1, out); !s.ok()) return s;
  }
  if (o_.indent) NewLine(level, out);
  out->push_back('}');
  return absl::OkStatus();
}

absl::Status JsonEncoder::Encode(const Value& v, int level, std::string* out) {
  using K = Value::Kind;
  if (out->size() > max_) {
    return absl::InvalidArgumentError(
        absl::StrCat("tojson output exceeds the output limit of ", max_, " bytes"));
  }
  switch (v.kind()) {
    case K::kNone: out->append("null"); break;
    case K::kBool: out->append(v.AsBool() ? "true" : "false"); break;
    case K::kInt: absl::StrAppend(out, v.AsInt()); break;
    case K::kFloat: out->append(JsonFloat(v.AsDouble())); break;
    case K::kString: AppendJsonString(v.AsString(), o_.ensure_ascii, out); break;
    case K::kList: {
      if (!v.is_plain_list()) {
        return absl::InvalidArgumentError(
            absl::StrCat("Object of type ", v.TypeName(), " is not JSON serializable"));
      }
      const auto& items = v.AsList().items;
      if (items.empty()) {
        out->append("[]");
        break;
      }
      out->push_back('[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out->append(item_sep_);
        if (o_.indent) NewLine(level + 1, out);
        if (absl::Status s = Encode(items[i], level + 1, out); !s.ok()) return s;
      }
      if (o_.indent) NewLine(level, out);
      out->push_back(']');
      break;
    }
    case K::kDict: return EncodeDict(v.AsDict(), level, out);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("Object of type ", v.TypeName(), " is not JSON serializable"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string out;
  if (!sci.empty() && sci[0] == '-') {
    out.push_back('-');
    sci.erase(0, 1);
  }
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::atoi(sci.c_str() + e + 1);
  const int decpt = exponent + 1;
  const int n = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    out.push_back(digits[0]);
    if (n > 1) absl::StrAppend(&out, ".", digits.substr(1));
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out.append(ebuf);
  } else if (decpt <= 0) {
    absl::StrAppend(&out, "0.", std::string(-decpt, '0'), digits);
  } else if (decpt >= n) {
    absl::StrAppend(&out, digits, std::string(decpt - n, '0'), ".0");
  } else {
    absl::StrAppend(&out, digits.substr(0, decpt), ".", digits.substr(decpt));
  }
  return out;
}

std::string StringRepr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  size_t pos = 0;
  while (pos < s.size()) {
    const char32_t c = text::DecodeAt(s, &pos);
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\t') {
      out.append("\\t");
    } else if (c == '\n') {
      out.append("\\n");
    } else if (c == '\r') {
      out.append("\\r");
    } else if (c < 0x20 || c == 0x7F) {
      out.append("\\x");
      AppendHex(c, 2, &out);
    } else if (c < 0x7F || text::IsPrintable(c)) {
      text::AppendUtf8(c, &out);
    } else if (c <= 0xFF) {
      out.append("\\x");
      AppendHex(c, 2, &out);
    } else if (c <= 0xFFFF) {
      out.append("\\u");
      AppendHex(c, 4, &out);
    } else {
      out.append("\\U");
      AppendHex(c, 8, &out);
    }
  }
  out.push_back(quote);
  return out;
}

std::string PyStr(const Value& v, size_t max_bytes) {
  if (v.is_string()) return v.AsString();
  if (v.is_undefined()) return "";
  return PyRepr(v, max_bytes);
}

std::string PyRepr(const Value& v, size_t max_bytes) {
  std::string out;
  ReprPrinter(max_bytes).Print(v, &out);
  return out;
}

std::string ShortRepr(const Value& v) {
  constexpr size_t kMax = 200;
  std::string out = PyRepr(v, kMax);
  if (out.size() <= kMax) return out;
  size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
  out.resize(cut);
  return out + "...";
}

absl::StatusOr<std::string> JsonDumps(const Value& v, const JsonOptions& options, size_t max_bytes) {
  std::string out;
  JsonEncoder encoder(options, max_bytes);
  if (absl::Status s = encoder.Encode(v, 0, &out); !s.ok()) return s;
  if (out.size() > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("tojson output exceeds the output limit of ", max_bytes, " bytes"));
  }
  return out;
}

}  // namespace adapterd::tmpl
