#include "server/template/sequence_filters.h"

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/template/template_filters.h"
#include "server/template/template_tests.h"
#include "server/template/text_util.h"
#include "server/template/value_ops.h"

namespace adapterd::tmpl {
namespace {

constexpr std::initializer_list<std::string_view> kNames = {
    "dictsort", "first",     "items", "join", "last",  "list", "map", "max", "min",
    "reject",   "rejectattr", "reverse", "select", "selectattr", "sort", "sum", "unique"};

absl::Status Error(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

// jinja2's make_attrgetter: "a.b.0" looks up a, then b, then item 0.
class AttrGetter {
 public:
  AttrGetter() = default;
  static absl::StatusOr<AttrGetter> Make(const Value& attribute, Value default_value = Value::None()) {
    AttrGetter g;
    g.default_ = std::move(default_value);
    if (attribute.is_int()) {
      g.parts_.push_back(attribute);
    } else if (attribute.is_string()) {
      for (absl::string_view part : absl::StrSplit(attribute.AsString(), '.')) {
        const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
          return c >= '0' && c <= '9';
        });
        if (digits && part.size() < 18) {
          g.parts_.push_back(Value::Int(std::stoll(std::string(part))));
        } else {
          g.parts_.push_back(Value::String(std::string(part)));
        }
      }
    } else if (!attribute.is_none()) {
      return Error(absl::StrCat("attribute must be a string or integer, not ", attribute.TypeName()));
    }
    return g;
  }
  bool empty() const { return parts_.empty(); }
  absl::StatusOr<Value> Get(const Value& item) const {
    Value v = item;
    for (const Value& part : parts_) {
      absl::StatusOr<Value> next = GetItem(v, part);
      if (!next.ok()) return next.status();
      v = std::move(*next);
      if (!default_.is_none() && v.is_undefined()) v = default_;
    }
    return v;
  }

 private:
  std::vector<Value> parts_;
  Value default_ = Value::None();
};

Value Folded(const Value& v, bool case_sensitive) {
  if (case_sensitive || !v.is_string()) return v;
  return Value::String(text::Lower(v.AsString()));
}

// Sorts `items` by `keys` (parallel), stably, with Python's ordering.
absl::Status SortByKeys(std::vector<Value>* items, const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(items->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  absl::Status error;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (!error.ok()) return false;
    absl::StatusOr<int> c = reverse ? PyCompare(keys[b], keys[a], "<") : PyCompare(keys[a], keys[b], "<");
    if (!c.ok()) {
      error = c.status();
      return false;
    }
    return *c < 0;
  });
  if (!error.ok()) return error;
  std::vector<Value> sorted;
  sorted.reserve(order.size());
  for (size_t i : order) sorted.push_back((*items)[i]);
  *items = std::move(sorted);
  return absl::OkStatus();
}

absl::StatusOr<Value> FirstOrLast(std::string_view name, const Value& v) {
  const bool first = name == "first";
  switch (v.kind()) {
    case Value::Kind::kList:
      if (!v.AsList().items.empty()) return first ? v.AsList().items.front() : v.AsList().items.back();
      break;
    case Value::Kind::kDict:
      if (!v.AsDict().entries.empty()) {
        return first ? v.AsDict().entries.front().first : v.AsDict().entries.back().first;
      }
      break;
    case Value::Kind::kString:
      if (!v.AsString().empty()) {
        absl::StatusOr<Value> c = GetItem(v, Value::Int(first ? 0 : -1));
        return c;
      }
      break;
    case Value::Kind::kIterator: {
      if (!first) return Error(absl::StrCat("'", v.TypeName(), "' object is not reversible"));
      IteratorData& it = v.AsIterator();
      if (!it.pending_error.empty()) return Error(it.pending_error);
      if (it.position < it.items.size()) return it.items[it.position++];
      break;
    }
    case Value::Kind::kUndefined: break;
    default:
      return Error(absl::StrCat("'", v.TypeName(), first ? "' object is not iterable" : "' object is not reversible"));
  }
  return Value::Undefined(first ? "No first item, sequence was empty." : "No last item, sequence was empty.");
}

absl::StatusOr<Value> Reverse(const Value& v, RenderState& state) {
  if (v.is_string()) {
    std::u32string u = text::Decode(v.AsString());
    std::reverse(u.begin(), u.end());
    return Value::String(text::Encode(u));
  }
  if (v.kind() == Value::Kind::kIterator || v.is_list() || v.is_dict() || v.is_undefined()) {
    absl::StatusOr<std::vector<Value>> items = Iterate(v, state);
    if (!items.ok()) return items.status();
    std::reverse(items->begin(), items->end());
    if (v.kind() == Value::Kind::kIterator) return Value::List(std::move(*items));
    const char* type = "reversed";
    if (v.is_dict()) type = "dict_reversekeyiterator";
    if (v.is_list()) {
      switch (v.AsList().flavor) {
        case ListFlavor::kPlain: type = v.AsList().is_tuple ? "reversed" : "list_reverseiterator"; break;
        case ListFlavor::kRange: type = "range_iterator"; break;
        case ListFlavor::kDictKeys: type = "dict_reversekeyiterator"; break;
        case ListFlavor::kDictValues: type = "dict_reversevalueiterator"; break;
        case ListFlavor::kDictItems: type = "dict_reverseitemiterator"; break;
      }
    }
    return Value::Iterator(std::move(*items), type);
  }
  return Error("argument must be iterable");
}

absl::StatusOr<Value> Join(const Value& v, const std::vector<Value>& a, RenderState& state) {
  absl::StatusOr<std::vector<Value>> items = Iterate(v, state);
  if (!items.ok()) return items.status();
  absl::StatusOr<AttrGetter> getter = AttrGetter::Make(a[1]);
  if (!getter.ok()) return getter.status();
  absl::StatusOr<std::string> sep = ToText(a[0], state);
  if (!sep.ok()) return sep.status();
  std::string out;
  for (size_t i = 0; i < items->size(); ++i) {
    absl::StatusOr<Value> item = getter->empty() ? (*items)[i] : getter->Get((*items)[i]);
    if (!item.ok()) return item.status();
    absl::StatusOr<std::string> piece = ToText(*item, state);
    if (!piece.ok()) return piece.status();
    if (absl::Status s = state.CheckSize(out.size() + sep->size() + piece->size()); !s.ok()) return s;
    if (i > 0) out += *sep;
    out += *piece;
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> Map(const Value& v, const CallArgs& args, RenderState& state) {
  if (!v.Truthy()) return Value::Iterator({}, "generator");
  std::vector<Value> out;
  absl::StatusOr<std::vector<Value>> items = Iterate(v, state);
  if (!items.ok()) return items.status();
  if (args.positional.empty()) {
    Value attribute, default_value = Value::None();
    bool has_attribute = false;
    for (const auto& [k, val] : args.keyword) {
      if (k == "attribute") {
        attribute = val;
        has_attribute = true;
      } else if (k == "default") {
        default_value = val;
      } else {
        return Error(absl::StrCat("Unexpected keyword argument '", k, "'"));
      }
    }
    if (!has_attribute) return Error("map requires a filter argument");
    absl::StatusOr<AttrGetter> getter = AttrGetter::Make(attribute, default_value);
    if (!getter.ok()) return getter.status();
    for (const Value& item : *items) {
      absl::StatusOr<Value> r = getter->Get(item);
      if (!r.ok()) return r.status();
      out.push_back(std::move(*r));
    }
    return Value::Iterator(std::move(out), "generator");
  }
  absl::StatusOr<std::string> filter = StringArg(args.positional[0], "map filter name");
  if (!filter.ok()) return filter.status();
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : *items) {
    absl::StatusOr<Value> r = ApplyFilter(*filter, item, rest, state);
    if (!r.ok()) return r.status();
    out.push_back(std::move(*r));
  }
  return Value::Iterator(std::move(out), "generator");
}

absl::StatusOr<Value> Select(std::string_view name, const Value& v, const CallArgs& args, RenderState& state) {
  if (!v.Truthy()) return Value::Iterator({}, "generator");
  const bool by_attr = name == "selectattr" || name == "rejectattr";
  const bool keep = name == "select" || name == "selectattr";
  size_t off = 0;
  AttrGetter getter;
  if (by_attr) {
    if (args.positional.empty()) return Error("Missing parameter for attribute name");
    absl::StatusOr<AttrGetter> g = AttrGetter::Make(args.positional[0]);
    if (!g.ok()) return g.status();
    getter = std::move(*g);
    off = 1;
  }
  std::string test;
  CallArgs test_args;
  if (args.positional.size() > off) {
    absl::StatusOr<std::string> t = StringArg(args.positional[off], "test name");
    if (!t.ok()) return t.status();
    test = *t;
    test_args.positional.assign(args.positional.begin() + off + 1, args.positional.end());
    test_args.keyword = args.keyword;
  }
  absl::StatusOr<std::vector<Value>> items = Iterate(v, state);
  if (!items.ok()) return items.status();
  std::vector<Value> out;
  for (const Value& item : *items) {
    absl::StatusOr<Value> subject = getter.empty() ? item : getter.Get(item);
    if (!subject.ok()) return subject.status();
    bool pass = subject->Truthy();
    if (!test.empty()) {
      absl::StatusOr<bool> r = ApplyTest(test, *subject, test_args, state);
      if (!r.ok()) return r.status();
      pass = *r;
    }
    if (pass == keep) out.push_back(item);
  }
  return Value::Iterator(std::move(out), "generator");
}

}  // namespace

namespace {

// Keys for sort, unique, min and max: the attribute(s) of each item,
// lower-cased unless case_sensitive.
absl::StatusOr<std::vector<Value>> Keys(const std::vector<Value>& items, const Value& attribute,
                                        bool case_sensitive, bool multi) {
  std::vector<AttrGetter> getters;
  if (multi && attribute.is_string() && attribute.AsString().find(',') != std::string::npos) {
    for (absl::string_view part : absl::StrSplit(attribute.AsString(), ',')) {
      absl::StatusOr<AttrGetter> g = AttrGetter::Make(Value::String(std::string(part)));
      if (!g.ok()) return g.status();
      getters.push_back(std::move(*g));
    }
  } else {
    absl::StatusOr<AttrGetter> g = AttrGetter::Make(attribute);
    if (!g.ok()) return g.status();
    getters.push_back(std::move(*g));
  }
  std::vector<Value> keys;
  keys.reserve(items.size());
  for (const Value& item : items) {
    std::vector<Value> parts;
    for (const AttrGetter& g : getters) {
      absl::StatusOr<Value> k = g.empty() ? item : g.Get(item);
      if (!k.ok()) return k.status();
      parts.push_back(Folded(*k, case_sensitive));
    }
    // sort compares lists of keys, as jinja2's multi-attribute getter builds them.
    keys.push_back(multi ? Value::List(std::move(parts)) : parts[0]);
  }
  return keys;
}

absl::StatusOr<Value> SortFilter(const Value& v, const std::vector<Value>& a, RenderState& state) {
  absl::StatusOr<std::vector<Value>> items = Iterate(v, state);
  if (!items.ok()) return items.status();
  absl::StatusOr<std::vector<Value>> keys = Keys(*items, a[2], a[1].Truthy(), true);
  if (!keys.ok()) return keys.status();
  if (absl::Status s = SortByKeys(&*items, *keys, a[0].Truthy()); !s.ok()) return s;
  return Value::List(std::move(*items));
}

absl::StatusOr<Value> Unique(const Value& v, const std::vector<Value>& a, RenderState& state) {
  absl::StatusOr<std::vector<Value>> items = Iterate(v, state);
  if (!items.ok()) return items.status();
  absl::StatusOr<std::vector<Value>> keys = Keys(*items, a[1], a[0].Truthy(), false);
  if (!keys.ok()) return keys.status();
  if (absl::Status s = state.Charge(static_cast<int64_t>(items->size() * items->size() / 16)); !s.ok()) {
    return s;
  }
  std::vector<Value> seen, out;
  for (size_t i = 0; i < items->size(); ++i) {
    if (!IsHashable((*keys)[i])) return Error(absl::StrCat("unhashable type: '", (*keys)[i].TypeName(), "'"));
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return PyEquals(s, (*keys)[i]); })) continue;
    seen.push_back((*keys)[i]);
    out.push_back((*items)[i]);
  }
  return Value::Iterator(std::move(out), "generator");
}

absl::StatusOr<Value> DictSort(const Value& v, const std::vector<Value>& a) {
  if (v.is_undefined()) return Error(v.UndefinedMessage());
  if (!v.is_dict()) return Error(absl::StrCat("'", v.TypeName(), "' object has no attribute 'items'"));
  if (!a[1].is_string() || (a[1].AsString() != "key" && a[1].AsString() != "value")) {
    return Error("You can only sort by either \"key\" or \"value\"");
  }
  const bool by_key = a[1].AsString() == "key";
  std::vector<Value> items, keys;
  for (const auto& [k, val] : v.AsDict().entries) {
    items.push_back(Value::List({k, val}, /*is_tuple=*/true));
    keys.push_back(Folded(by_key ? k : val, a[0].Truthy()));
  }
  if (absl::Status s = SortByKeys(&items, keys, a[2].Truthy()); !s.ok()) return s;
  return Value::List(std::move(items));
}

absl::StatusOr<Value> MinMax(bool max, const Value& v, const std::vector<Value>& a, RenderState& state) {
  absl::StatusOr<std::vector<Value>> items = Iterate(v, state);
  if (!items.ok()) return items.status();
  if (items->empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  absl::StatusOr<std::vector<Value>> keys = Keys(*items, a[1], a[0].Truthy(), false);
  if (!keys.ok()) return keys.status();
  size_t best = 0;
  for (size_t i = 1; i < items->size(); ++i) {
    absl::StatusOr<int> c = PyCompare((*keys)[i], (*keys)[best], max ? ">" : "<");
    if (!c.ok()) return c.status();
    if (max ? *c > 0 : *c < 0) best = i;
  }
  return (*items)[best];
}

absl::StatusOr<Value> Sum(const Value& v, const std::vector<Value>& a, RenderState& state) {
  absl::StatusOr<std::vector<Value>> items = Iterate(v, state);
  if (!items.ok()) return items.status();
  absl::StatusOr<AttrGetter> getter = AttrGetter::Make(a[0]);
  if (!getter.ok()) return getter.status();
  Value total = a[1];
  for (const Value& item : *items) {
    absl::StatusOr<Value> x = getter->empty() ? item : getter->Get(item);
    if (!x.ok()) return x.status();
    if (total.is_string() || x->is_string()) return Error("sum() can't sum strings [use ''.join(seq) instead]");
    absl::StatusOr<Value> next = BinaryOp("+", total, *x, state);
    if (!next.ok()) return next.status();
    total = std::move(*next);
  }
  return total;
}

absl::StatusOr<Value> Items(const Value& v) {
  if (v.is_undefined()) return Value::Iterator({}, "generator");
  if (!v.is_dict()) return Error("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, val] : v.AsDict().entries) out.push_back(Value::List({k, val}, /*is_tuple=*/true));
  return Value::Iterator(std::move(out), "generator");
}

}  // namespace

static absl::StatusOr<Value> ApplyFilterNow(std::string_view name, const Value& v, const CallArgs& args,
                                     RenderState& state);

bool IsSequenceFilter(std::string_view name) {
  return std::find(kNames.begin(), kNames.end(), name) != kNames.end();
}

// The generator function jinja2 runs for `name`, or null when the filter
// computes its result at once.
static const char* GeneratorFunction(std::string_view name) {
  if (name == "map") return "sync_do_map";
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return "select_or_reject";
  }
  if (name == "unique") return "sync_do_unique";
  if (name == "items") return "do_items";
  return nullptr;
}

absl::StatusOr<Value> ApplySequenceFilter(std::string_view name, const Value& v, const CallArgs& args,
                                          RenderState& state) {
  absl::StatusOr<Value> r = ApplyFilterNow(name, v, args, state);
  const char* generator = GeneratorFunction(name);
  if (generator == nullptr) return r;
  // A generator raises only when it runs: its error waits for the consumer.
  if (!r.ok()) return Value::FailedGenerator(std::string(r.status().message()), generator);
  if (r->kind() == Value::Kind::kIterator) r->AsIterator().function = generator;
  return r;
}

static absl::StatusOr<Value> ApplyFilterNow(std::string_view name, const Value& v, const CallArgs& args,
                                     RenderState& state) {
  const std::string what = absl::StrCat("filter \"", std::string(name), "\"");
  if (name == "map") return Map(v, args, state);
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return Select(name, v, args, state);
  }
  absl::StatusOr<std::vector<Value>> a;
  if (name == "join") {
    a = BindArgs(args, {{"d", Value::String("")}, {"attribute", Value::None()}}, what);
    return a.ok() ? Join(v, *a, state) : a.status();
  }
  if (name == "sort") {
    a = BindArgs(args, {{"reverse", Value::Bool(false)}, {"case_sensitive", Value::Bool(false)},
                        {"attribute", Value::None()}}, what);
    return a.ok() ? SortFilter(v, *a, state) : a.status();
  }
  if (name == "unique" || name == "min" || name == "max") {
    a = BindArgs(args, {{"case_sensitive", Value::Bool(false)}, {"attribute", Value::None()}}, what);
    if (!a.ok()) return a.status();
    return name == "unique" ? Unique(v, *a, state) : MinMax(name == "max", v, *a, state);
  }
  if (name == "dictsort") {
    a = BindArgs(args, {{"case_sensitive", Value::Bool(false)}, {"by", Value::String("key")},
                        {"reverse", Value::Bool(false)}}, what);
    return a.ok() ? DictSort(v, *a) : a.status();
  }
  if (name == "sum") {
    a = BindArgs(args, {{"attribute", Value::None()}, {"start", Value::Int(0)}}, what);
    return a.ok() ? Sum(v, *a, state) : a.status();
  }
  a = BindArgs(args, {}, what);
  if (!a.ok()) return a.status();
  if (name == "first" || name == "last") return FirstOrLast(name, v);
  if (name == "reverse") return Reverse(v, state);
  if (name == "items") return Items(v);
  absl::StatusOr<std::vector<Value>> items = Iterate(v, state);  // list
  if (!items.ok()) return items.status();
  return Value::List(std::move(*items));
}

}  // namespace adapterd::tmpl
