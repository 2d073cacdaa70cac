// The values a chat template computes with, modelled on the Python objects
// that jinja2 would see: None, bool, int, float, str, list, tuple, dict,
// jinja2's Undefined, namespace(), loop, generators and callables.
//
// A Value is a small handle. Strings, lists, tuples and dicts are immutable
// and shared between copies, as the immutable sandbox never changes them.
// Namespaces are the only mutable containers; they are owned by the render
// that created them (see RenderArena), never by a Value, so no cycle of
// Values can leak. Iterators (generators) are consumed once, as in Python.
// A Value is thread-compatible; values built from a context are never shared
// between renders.
#ifndef ADAPTERD_SERVER_TEMPLATE_TEMPLATE_VALUE_H_
#define ADAPTERD_SERVER_TEMPLATE_TEMPLATE_VALUE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace adapterd::tmpl {

class Value;
struct MacroDef;

// What Python type a list-like value stands for: a list or tuple, a range(),
// or a view of a dict (dict.keys(), values(), items()).
enum class ListFlavor : uint8_t { kPlain, kRange, kDictKeys, kDictValues, kDictItems };

// An immutable list (or tuple). `depth` is 1 + the deepest element's depth;
// `weight` counts it and every nested element (shared ones each time).
struct ListData {
  std::vector<Value> items;
  bool is_tuple = false;
  ListFlavor flavor = ListFlavor::kPlain;
  int64_t range_start = 0, range_stop = 0, range_step = 1;  // kRange, for repr()
  int depth = 1;
  int64_t weight = 1;
};

// An immutable mapping that keeps insertion order, like a Python dict.
struct DictData {
  std::vector<std::pair<Value, Value>> entries;
  int depth = 1;
  int64_t weight = 1;
  // The value stored under `key`, or null.
  const Value* Find(const Value& key) const;
  const Value* FindString(std::string_view key) const;
};

// The attributes of a namespace() object; mutable through `set ns.attr`.
struct NamespaceData {
  std::vector<std::pair<std::string, Value>> attrs;
  Value* Find(std::string_view name);
};

// A one-shot iterator over a snapshot of items: what jinja2's map, select,
// selectattr, items and reverse filters return.
// A generator whose computation failed keeps the error for its consumer, as
// Python only raises once the generator runs.
struct IteratorData {
  std::vector<Value> items;
  size_t position = 0;
  std::string type_name;  // Python's: "generator", "list_reverseiterator"
  std::string function;   // the generator function, for repr()
  std::string pending_error;
  int depth = 1;
  int64_t weight = 1;
};

// Something a template can call.
struct CallableData {
  enum class Kind { kGlobal, kMethod, kMacro, kLoopCycle };
  Kind kind = Kind::kGlobal;
  std::string name;                // global or method name
  std::shared_ptr<const Value> receiver;  // kMethod: the object; kLoopCycle: index0
  const MacroDef* macro = nullptr;        // kMacro; owned by the parsed template
  int frame = 0;                          // kMacro: the scope frame it was defined in
  int depth = 0;                          // 1 + the receiver's depth
  int64_t weight = 1;
};

class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict,
    kNamespace, kIterator, kCallable, kLoop,
  };

  Value() = default;  // an Undefined without a message
  static Value Undefined(std::string message);
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s);
  static Value List(std::vector<Value> items, bool is_tuple = false);
  // range(start, stop, step) with its items.
  static Value Range(std::vector<Value> items, int64_t start, int64_t stop, int64_t step);
  // dict.keys(), values() or items().
  static Value DictView(std::vector<Value> items, ListFlavor flavor);
  static Value Dict(std::vector<std::pair<Value, Value>> entries);
  static Value Namespace(NamespaceData* ns);
  static Value Iterator(std::vector<Value> items, std::string type_name, std::string function = "");
  // A generator that raises `error` when it is consumed.
  static Value FailedGenerator(std::string error, std::string function);
  static Value Callable(CallableData fn);
  // A loop object whose attributes are `attrs` (string keys).
  static Value Loop(std::vector<std::pair<Value, Value>> attrs);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_int() const { return kind_ == Kind::kInt; }  // excludes bool
  bool is_number() const {
    return kind_ == Kind::kBool || kind_ == Kind::kInt || kind_ == Kind::kFloat;
  }
  bool is_list() const { return kind_ == Kind::kList; }
  // A Python list or tuple (not a range or dict view).
  bool is_plain_list() const { return kind_ == Kind::kList && AsList().flavor == ListFlavor::kPlain; }
  bool is_dict() const { return kind_ == Kind::kDict; }

  bool AsBool() const { return std::get<bool>(data_); }
  // kInt or kBool as an integer (Python's bool is an int).
  int64_t AsInt() const;
  // Any number as a double.
  double AsDouble() const;
  const std::string& AsString() const { return *std::get<StringPtr>(data_); }
  const ListData& AsList() const { return *std::get<ListPtr>(data_); }
  // kDict or kLoop.
  const DictData& AsDict() const { return *std::get<DictPtr>(data_); }
  NamespaceData* AsNamespace() const { return std::get<NamespaceData*>(data_); }
  IteratorData& AsIterator() const { return *std::get<IteratorPtr>(data_); }
  const CallableData& AsCallable() const { return *std::get<CallablePtr>(data_); }
  // Why the value is undefined, as jinja2 would say when it is used.
  std::string UndefinedMessage() const;

  // Nesting depth: 0 for scalars, 1 + the deepest element for containers.
  int Depth() const;
  // Nodes: 1 for scalars, 1 + the elements' weights for containers (saturating).
  int64_t Weight() const;
  // Python truthiness.
  bool Truthy() const;
  // Python's type name, as in its error messages ("str", "NoneType", ...).
  std::string TypeName() const;

 private:
  using StringPtr = std::shared_ptr<const std::string>;
  using ListPtr = std::shared_ptr<const ListData>;
  using DictPtr = std::shared_ptr<const DictData>;
  using IteratorPtr = std::shared_ptr<IteratorData>;
  using CallablePtr = std::shared_ptr<const CallableData>;

  Kind kind_ = Kind::kUndefined;
  std::variant<std::monostate, bool, int64_t, double, StringPtr, ListPtr, DictPtr,
               NamespaceData*, IteratorPtr, CallablePtr>
      data_;
};

// Python ==.
bool PyEquals(const Value& a, const Value& b);
// Python ordering for <, <=, >, >=: negative, zero or positive; a TypeError
// message for unorderable operands (`op` names the operator).
absl::StatusOr<int> PyCompare(const Value& a, const Value& b, std::string_view op);
// Whether `v` may be a dict key (Python's hashable types).
bool IsHashable(const Value& v);
// jinja2's object_type_repr: "dict object", "None", ...
std::string ObjectTypeRepr(const Value& v);

}  // namespace adapterd::tmpl

#endif  // ADAPTERD_SERVER_TEMPLATE_TEMPLATE_VALUE_H_
