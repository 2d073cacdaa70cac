#include "server/template/template_value.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace adapterd::tmpl {
namespace {

int64_t SaturatingAdd(int64_t a, int64_t b) {
  constexpr int64_t kMax = int64_t{1} << 62;
  return a + b > kMax ? kMax : a + b;
}

}  // namespace

const Value* DictData::Find(const Value& key) const {
  if (key.is_string()) return FindString(key.AsString());
  for (const auto& [k, v] : entries) {
    if (PyEquals(k, key)) return &v;
  }
  return nullptr;
}

const Value* DictData::FindString(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k.is_string() && k.AsString() == key) return &v;
  }
  return nullptr;
}

Value* NamespaceData::Find(std::string_view name) {
  for (auto& [k, v] : attrs) {
    if (k == name) return &v;
  }
  return nullptr;
}

Value Value::Undefined(std::string message) {
  Value v;
  v.data_ = std::make_shared<const std::string>(std::move(message));
  return v;
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.data_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.data_ = i;
  return v;
}

Value Value::Float(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.data_ = f;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.data_ = std::make_shared<const std::string>(std::move(s));
  return v;
}

Value Value::List(std::vector<Value> items, bool is_tuple) {
  auto data = std::make_shared<ListData>();
  int depth = 0;
  int64_t weight = 1;
  for (const Value& item : items) {
    depth = std::max(depth, item.Depth());
    weight = SaturatingAdd(weight, item.Weight());
  }
  data->items = std::move(items);
  data->is_tuple = is_tuple;
  data->depth = depth + 1;
  data->weight = weight;
  Value v;
  v.kind_ = Kind::kList;
  v.data_ = ListPtr(std::move(data));
  return v;
}

Value Value::Range(std::vector<Value> items, int64_t start, int64_t stop, int64_t step) {
  Value v = List(std::move(items));
  auto data = std::const_pointer_cast<ListData>(std::get<ListPtr>(v.data_));
  data->flavor = ListFlavor::kRange;
  data->range_start = start;
  data->range_stop = stop;
  data->range_step = step;
  return v;
}

Value Value::DictView(std::vector<Value> items, ListFlavor flavor) {
  Value v = List(std::move(items));
  std::const_pointer_cast<ListData>(std::get<ListPtr>(v.data_))->flavor = flavor;
  return v;
}

Value Value::Dict(std::vector<std::pair<Value, Value>> entries) {
  auto data = std::make_shared<DictData>();
  int depth = 0;
  int64_t weight = 1;
  for (const auto& [k, item] : entries) {
    depth = std::max({depth, k.Depth(), item.Depth()});
    weight = SaturatingAdd(weight, SaturatingAdd(k.Weight(), item.Weight()));
  }
  data->entries = std::move(entries);
  data->depth = depth + 1;
  data->weight = weight;
  Value v;
  v.kind_ = Kind::kDict;
  v.data_ = DictPtr(std::move(data));
  return v;
}

Value Value::Namespace(NamespaceData* ns) {
  Value v;
  v.kind_ = Kind::kNamespace;
  v.data_ = ns;
  return v;
}

Value Value::FailedGenerator(std::string error, std::string function) {
  Value v = Iterator({}, "generator", std::move(function));
  v.AsIterator().pending_error = std::move(error);
  return v;
}

Value Value::Iterator(std::vector<Value> items, std::string type_name, std::string function) {
  auto data = std::make_shared<IteratorData>();
  data->function = std::move(function);
  int depth = 0;
  int64_t weight = 1;
  for (const Value& item : items) {
    depth = std::max(depth, item.Depth());
    weight = SaturatingAdd(weight, item.Weight());
  }
  data->depth = depth + 1;
  data->weight = weight;
  data->items = std::move(items);
  data->type_name = std::move(type_name);
  Value v;
  v.kind_ = Kind::kIterator;
  v.data_ = std::move(data);
  return v;
}

Value Value::Callable(CallableData fn) {
  if (fn.receiver) {
    fn.depth = fn.receiver->Depth() + 1;
    fn.weight = SaturatingAdd(fn.receiver->Weight(), 1);
  }
  Value v;
  v.kind_ = Kind::kCallable;
  v.data_ = std::make_shared<const CallableData>(std::move(fn));
  return v;
}

Value Value::Loop(std::vector<std::pair<Value, Value>> attrs) {
  Value v = Dict(std::move(attrs));
  v.kind_ = Kind::kLoop;
  return v;
}

int64_t Value::AsInt() const {
  if (kind_ == Kind::kBool) return AsBool() ? 1 : 0;
  return std::get<int64_t>(data_);
}

double Value::AsDouble() const {
  if (kind_ == Kind::kFloat) return std::get<double>(data_);
  return static_cast<double>(AsInt());
}

std::string Value::UndefinedMessage() const {
  if (const auto* p = std::get_if<StringPtr>(&data_); p != nullptr && !(*p)->empty()) return **p;
  return "value is undefined";
}

int Value::Depth() const {
  switch (kind_) {
    case Kind::kList: return AsList().depth;
    case Kind::kDict:
    case Kind::kLoop: return AsDict().depth;
    case Kind::kIterator: return AsIterator().depth;
    case Kind::kCallable: return AsCallable().depth;
    default: return 0;
  }
}

int64_t Value::Weight() const {
  switch (kind_) {
    case Kind::kList: return AsList().weight;
    case Kind::kDict:
    case Kind::kLoop: return AsDict().weight;
    case Kind::kIterator: return AsIterator().weight;
    case Kind::kCallable: return AsCallable().weight;
    default: return 1;
  }
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return AsBool();
    case Kind::kInt: return AsInt() != 0;
    case Kind::kFloat: return AsDouble() != 0.0;
    case Kind::kString: return !AsString().empty();
    case Kind::kList: return !AsList().items.empty();
    case Kind::kDict: return !AsDict().entries.empty();
    default: return true;
  }
}

std::string Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList:
      switch (AsList().flavor) {
        case ListFlavor::kRange: return "range";
        case ListFlavor::kDictKeys: return "dict_keys";
        case ListFlavor::kDictValues: return "dict_values";
        case ListFlavor::kDictItems: return "dict_items";
        default: return AsList().is_tuple ? "tuple" : "list";
      }
    case Kind::kDict: return "dict";
    case Kind::kNamespace: return "Namespace";
    case Kind::kIterator: return AsIterator().type_name;
    case Kind::kCallable:
      switch (AsCallable().kind) {
        case CallableData::Kind::kMacro: return "Macro";
        case CallableData::Kind::kGlobal: return "function";
        default: return "builtin_function_or_method";
      }
    case Kind::kLoop: return "LoopContext";
  }
  return "object";
}

namespace {

// Exact comparison of an int with a float, as Python does it.
int CompareIntFloat(int64_t i, double f) {
  if (std::isnan(f)) return 2;  // unordered
  if (f >= 9223372036854775808.0) return -1;
  if (f < -9223372036854775808.0) return 1;
  const double fl = std::floor(f);
  const int64_t fi = static_cast<int64_t>(fl);
  if (i < fi) return -1;
  if (i > fi) return 1;
  return fl == f ? 0 : -1;
}

// Numeric comparison: -1, 0, 1, or 2 when unordered (NaN).
int CompareNumbers(const Value& a, const Value& b) {
  const bool af = a.kind() == Value::Kind::kFloat, bf = b.kind() == Value::Kind::kFloat;
  if (!af && !bf) {
    const int64_t x = a.AsInt(), y = b.AsInt();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (af && bf) {
    const double x = a.AsDouble(), y = b.AsDouble();
    if (std::isnan(x) || std::isnan(y)) return 2;
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (bf) return CompareIntFloat(a.AsInt(), b.AsDouble());
  const int c = CompareIntFloat(b.AsInt(), a.AsDouble());
  return c == 2 ? 2 : -c;
}

bool DictEquals(const DictData& a, const DictData& b) {
  if (a.entries.size() != b.entries.size()) return false;
  for (const auto& [k, v] : a.entries) {
    const Value* other = b.Find(k);
    if (other == nullptr || !PyEquals(v, *other)) return false;
  }
  return true;
}

}  // namespace

bool PyEquals(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) return CompareNumbers(a, b) == 0;
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::kUndefined:
    case K::kNone: return true;
    case K::kString: return a.AsString() == b.AsString();
    case K::kList: {
      const ListData& x = a.AsList();
      const ListData& y = b.AsList();
      if (x.is_tuple != y.is_tuple || x.flavor != y.flavor || x.items.size() != y.items.size()) return false;
      if (&x == &y) return true;
      for (size_t i = 0; i < x.items.size(); ++i) {
        if (!PyEquals(x.items[i], y.items[i])) return false;
      }
      return true;
    }
    case K::kDict: return &a.AsDict() == &b.AsDict() || DictEquals(a.AsDict(), b.AsDict());
    case K::kLoop: return &a.AsDict() == &b.AsDict();
    case K::kNamespace: return a.AsNamespace() == b.AsNamespace();
    case K::kIterator: return &a.AsIterator() == &b.AsIterator();
    case K::kCallable: return &a.AsCallable() == &b.AsCallable();
    default: return false;
  }
}

absl::StatusOr<int> PyCompare(const Value& a, const Value& b, std::string_view op) {
  if (a.is_undefined()) return absl::InvalidArgumentError(a.UndefinedMessage());
  if (b.is_undefined()) return absl::InvalidArgumentError(b.UndefinedMessage());
  if (a.is_number() && b.is_number()) {
    const int c = CompareNumbers(a, b);
    // NaN: every ordering is false; report "greater" for < and "less" for >.
    if (c == 2) return (op == "<" || op == "<=") ? 1 : -1;
    return c;
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.AsString().compare(b.AsString());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_plain_list() && b.is_plain_list() && a.AsList().is_tuple == b.AsList().is_tuple) {
    const auto& x = a.AsList().items;
    const auto& y = b.AsList().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (PyEquals(x[i], y[i])) continue;
      return PyCompare(x[i], y[i], op);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  return absl::InvalidArgumentError(absl::StrCat("'", std::string(op), "' not supported between instances of '",
                                                 a.TypeName(), "' and '", b.TypeName(), "'"));
}

bool IsHashable(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kDict:
    case Value::Kind::kLoop: return v.kind() == Value::Kind::kLoop;
    case Value::Kind::kList:
      if (v.AsList().flavor == ListFlavor::kRange) return true;
      if (!v.AsList().is_tuple || v.AsList().flavor != ListFlavor::kPlain) return false;
      for (const Value& item : v.AsList().items) {
        if (!IsHashable(item)) return false;
      }
      return true;
    default: return true;
  }
}

std::string ObjectTypeRepr(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kNone: return "None";
    case Value::Kind::kNamespace: return "jinja2.utils.Namespace object";
    case Value::Kind::kLoop: return "jinja2.runtime.LoopContext object";
    case Value::Kind::kUndefined: return "jinja2.runtime.Undefined object";
    default: break;
  }
  if (v.kind() == Value::Kind::kCallable && v.AsCallable().kind == CallableData::Kind::kMacro) {
    return "jinja2.runtime.Macro object";
  }
  return absl::StrCat(v.TypeName(), " object");
}

}  // namespace adapterd::tmpl
