#include "server/template/value_methods.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/template/text_util.h"
#include "server/template/value_format.h"
#include "server/template/value_ops.h"

namespace adapterd::tmpl {
namespace {

bool OneOf(std::string_view name, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

constexpr std::initializer_list<std::string_view> kStrSupported = {
    "capitalize", "count",   "endswith", "find",    "format",       "index",        "isalnum",
    "isalpha",    "isdigit", "islower",  "isspace", "isupper",      "join",         "lower",
    "lstrip",     "replace", "rfind",    "rsplit",  "rstrip",       "split",        "splitlines",
    "startswith", "strip",   "title",    "upper",   "removeprefix", "removesuffix"};
constexpr std::initializer_list<std::string_view> kStrOther = {
    "casefold",  "center",    "encode", "expandtabs", "format_map", "isascii", "isdecimal",
    "isidentifier", "isnumeric", "isprintable", "istitle", "ljust", "maketrans", "partition",
    "rindex",    "rjust",     "rpartition", "swapcase", "translate", "zfill"};
constexpr std::initializer_list<std::string_view> kDictSupported = {"copy", "get", "items", "keys",
                                                                    "values"};
constexpr std::initializer_list<std::string_view> kDictMutators = {"clear", "pop", "popitem",
                                                                   "setdefault", "update"};
constexpr std::initializer_list<std::string_view> kListSupported = {"copy", "count", "index"};
constexpr std::initializer_list<std::string_view> kListMutators = {
    "append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"};

absl::Status Error(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

absl::StatusOr<Value> StringList(std::vector<std::string> parts, RenderState& state) {
  if (absl::Status s = state.CheckItems(parts.size()); !s.ok()) return s;
  std::vector<Value> out;
  out.reserve(parts.size());
  for (std::string& p : parts) out.push_back(Value::String(std::move(p)));
  return Value::List(std::move(out));
}

// Code point index of byte offset `pos` in s (npos stays -1).
int64_t CharIndex(const std::string& s, size_t pos) {
  if (pos == std::string::npos) return -1;
  return static_cast<int64_t>(text::CodePointCount(std::string_view(s).substr(0, pos)));
}

absl::StatusOr<Value> Affix(const std::string& s, std::string_view name, const CallArgs& args) {
  absl::StatusOr<std::vector<Value>> a =
      BindArgs(args, {{"prefix", std::nullopt}, {"start", Value::None()}, {"end", Value::None()}},
               absl::StrCat("str.", std::string(name), "()"));
  if (!a.ok()) return a.status();
  if (!(*a)[1].is_none() || !(*a)[2].is_none()) {
    return Error(absl::StrCat("str.", std::string(name), "() with start or end is not supported"));
  }
  std::vector<Value> candidates;
  if ((*a)[0].is_list() && (*a)[0].AsList().is_tuple) {
    candidates = (*a)[0].AsList().items;
  } else {
    candidates.push_back((*a)[0]);
  }
  const bool starts = name == "startswith";
  for (const Value& c : candidates) {
    if (!c.is_string()) {
      return Error(absl::StrCat(std::string(name), " first arg must be str or a tuple of str, not ", c.TypeName()));
    }
    const std::string& p = c.AsString();
    if (p.size() <= s.size() &&
        (starts ? s.compare(0, p.size(), p) == 0 : s.compare(s.size() - p.size(), p.size(), p) == 0)) {
      return Value::Bool(true);
    }
  }
  return Value::Bool(false);
}

absl::StatusOr<Value> SplitMethod(const std::string& s, std::string_view name, const CallArgs& args,
                                  RenderState& state) {
  absl::StatusOr<std::vector<Value>> a = BindArgs(
      args, {{"sep", Value::None()}, {"maxsplit", Value::Int(-1)}}, absl::StrCat("str.", std::string(name), "()"));
  if (!a.ok()) return a.status();
  absl::StatusOr<int64_t> maxsplit = IntArg((*a)[1], "maxsplit");
  if (!maxsplit.ok()) return maxsplit.status();
  if (absl::Status c = state.Charge(static_cast<int64_t>(s.size())); !c.ok()) return c;
  if ((*a)[0].is_none()) {
    if (name == "rsplit" && *maxsplit >= 0) return Error("str.rsplit() on whitespace with maxsplit is not supported");
    return StringList(text::SplitWhitespace(s, *maxsplit), state);
  }
  absl::StatusOr<std::string> sep = StringArg((*a)[0], "separator");
  if (!sep.ok()) return sep.status();
  if (sep->empty()) return Error("empty separator");
  if (text::CountMatches(s, *sep, -1) > state.limits().max_value_nodes) return state.CheckItems(SIZE_MAX);
  return StringList(name == "split" ? text::Split(s, *sep, *maxsplit) : text::RSplit(s, *sep, *maxsplit),
                    state);
}

absl::StatusOr<Value> ReplaceMethod(const std::string& s, const CallArgs& args, RenderState& state) {
  absl::StatusOr<std::vector<Value>> a =
      BindArgs(args, {{"old", std::nullopt}, {"new", std::nullopt}, {"count", Value::Int(-1)}},
               "str.replace()");
  if (!a.ok()) return a.status();
  absl::StatusOr<std::string> old_text = StringArg((*a)[0], "replace() argument 1");
  if (!old_text.ok()) return old_text.status();
  absl::StatusOr<std::string> new_text = StringArg((*a)[1], "replace() argument 2");
  if (!new_text.ok()) return new_text.status();
  absl::StatusOr<int64_t> count = IntArg((*a)[2], "count");
  if (!count.ok()) return count.status();
  const int64_t hits = old_text->empty()
                           ? static_cast<int64_t>(text::CodePointCount(s)) + 1
                           : text::CountMatches(s, *old_text, *count);
  const int64_t n = *count >= 0 ? std::min(hits, *count) : hits;
  const double size = static_cast<double>(s.size()) +
                      static_cast<double>(n) * (static_cast<double>(new_text->size()) -
                                                static_cast<double>(old_text->size()));
  if (size > static_cast<double>(state.limits().max_output_bytes)) return state.CheckString(SIZE_MAX);
  if (absl::Status c = state.CheckString(static_cast<size_t>(std::max(size, 0.0)) + s.size()); !c.ok()) {
    return c;
  }
  return Value::String(text::Replace(s, *old_text, *new_text, *count));
}

absl::StatusOr<Value> JoinMethod(const std::string& sep, const CallArgs& args, RenderState& state);
absl::StatusOr<Value> FormatMethod(const std::string& format, const CallArgs& args, RenderState& state);

absl::StatusOr<Value> SearchMethod(const std::string& s, std::string_view name, const CallArgs& args,
                                   RenderState& state) {
  absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"sub", std::nullopt}}, absl::StrCat("str.", std::string(name), "()"));
  if (!a.ok()) return a.status();
  absl::StatusOr<std::string> sub = StringArg((*a)[0], absl::StrCat(std::string(name), "() argument"));
  if (!sub.ok()) return sub.status();
  if (absl::Status c = state.Charge(static_cast<int64_t>(s.size())); !c.ok()) return c;
  if (name == "count") {
    if (sub->empty()) return Value::Int(static_cast<int64_t>(text::CodePointCount(s)) + 1);
    return Value::Int(text::CountMatches(s, *sub, -1));
  }
  size_t pos;
  if (name == "rfind") {
    pos = sub->size() > 16 ? std::string::npos : s.rfind(*sub);
    if (sub->size() > 16) {
      for (size_t p = text::Find(s, *sub, 0); p != std::string::npos; p = text::Find(s, *sub, p + 1)) pos = p;
    }
  } else {
    pos = text::Find(s, *sub, 0);
  }
  if (name == "index" && pos == std::string::npos) return Error("substring not found");
  return Value::Int(CharIndex(s, pos));
}

absl::StatusOr<Value> Predicate(const std::string& s, std::string_view name) {
  if (name == "islower") return Value::Bool(text::PyIsLower(s));
  if (name == "isupper") return Value::Bool(text::PyIsUpper(s));
  bool all = !s.empty();
  size_t pos = 0;
  while (pos < s.size() && all) {
    const char32_t c = text::DecodeAt(s, &pos);
    if (name == "isalnum") all = text::IsAlnum(c);
    if (name == "isalpha") all = text::IsAlpha(c);
    if (name == "isdigit") all = text::IsDigit(c);
    if (name == "isspace") all = text::IsSpace(c);
  }
  return Value::Bool(all);
}

absl::StatusOr<Value> NoArgs(std::string_view name, const CallArgs& args) {
  if (!args.empty()) return Error(absl::StrCat("str.", std::string(name), "() takes no arguments"));
  return Value::None();
}

absl::StatusOr<Value> StrMethod(const std::string& s, std::string_view name, const CallArgs& args,
                                RenderState& state) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"chars", Value::None()}}, absl::StrCat("str.", std::string(name), "()"));
    if (!a.ok()) return a.status();
    std::string chars;
    if (!(*a)[0].is_none()) {
      absl::StatusOr<std::string> c = StringArg((*a)[0], absl::StrCat(std::string(name), " arg"));
      if (!c.ok()) return c.status();
      chars = *c;
    }
    return Value::String(text::Strip(s, (*a)[0].is_none() ? nullptr : &chars, name != "rstrip",
                                     name != "lstrip"));
  }
  if (name == "startswith" || name == "endswith") return Affix(s, name, args);
  if (name == "split" || name == "rsplit") return SplitMethod(s, name, args, state);
  if (name == "replace") return ReplaceMethod(s, args, state);
  if (name == "join") return JoinMethod(s, args, state);
  if (name == "format") return FormatMethod(s, args, state);
  if (name == "count" || name == "find" || name == "rfind" || name == "index") {
    return SearchMethod(s, name, args, state);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"affix", std::nullopt}}, absl::StrCat("str.", std::string(name), "()"));
    if (!a.ok()) return a.status();
    absl::StatusOr<std::string> affix = StringArg((*a)[0], absl::StrCat(std::string(name), "() argument"));
    if (!affix.ok()) return affix.status();
    if (name == "removeprefix" && s.compare(0, affix->size(), *affix) == 0) {
      return Value::String(s.substr(affix->size()));
    }
    if (name == "removesuffix" && !affix->empty() && s.size() >= affix->size() &&
        s.compare(s.size() - affix->size(), affix->size(), *affix) == 0) {
      return Value::String(s.substr(0, s.size() - affix->size()));
    }
    return Value::String(s);
  }
  if (absl::StatusOr<Value> none = NoArgs(name, args); !none.ok()) return none;
  if (absl::Status c = state.CheckString(s.size() * 2); !c.ok()) return c;
  if (name == "upper") return Value::String(text::Upper(s));
  if (name == "lower") return Value::String(text::Lower(s));
  if (name == "title") return Value::String(text::PyTitle(s));
  if (name == "capitalize") return Value::String(text::Capitalize(s));
  if (name == "splitlines") return StringList(text::SplitLines(s), state);
  return Predicate(s, name);
}

absl::StatusOr<Value> JoinMethod(const std::string& sep, const CallArgs& args, RenderState& state) {
  absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"iterable", std::nullopt}}, "str.join()");
  if (!a.ok()) return a.status();
  absl::StatusOr<std::vector<Value>> items = Iterate((*a)[0], state);
  if (!items.ok()) return items.status();
  std::string out;
  for (size_t i = 0; i < items->size(); ++i) {
    const Value& item = (*items)[i];
    if (!item.is_string()) {
      return Error(absl::StrCat("sequence item ", i, ": expected str instance, ", item.TypeName(), " found"));
    }
    if (absl::Status c = state.CheckSize(out.size() + sep.size() + item.AsString().size()); !c.ok()) return c;
    if (i > 0) out += sep;
    out += item.AsString();
  }
  if (absl::Status c = state.CheckString(out.size()); !c.ok()) return c;
  return Value::String(std::move(out));
}

}  // namespace

namespace {

// str.format with plain fields: {}, {0}, {name}, optionally !s or !r.
absl::StatusOr<Value> FormatMethod(const std::string& format, const CallArgs& args, RenderState& state) {
  std::string out;
  size_t auto_index = 0;
  bool used_auto = false, used_manual = false;
  for (size_t i = 0; i < format.size(); ++i) {
    const char c = format[i];
    if (c == '}') {
      if (i + 1 < format.size() && format[i + 1] == '}') ++i;
      else return Error("Single '}' encountered in format string");
      out.push_back('}');
      continue;
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    const size_t close = format.find('}', i);
    if (close == std::string::npos) return Error("Single '{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    i = close;
    char conversion = 's';
    if (const size_t bang = field.find('!'); bang != std::string::npos) {
      if (bang + 2 != field.size() || (field[bang + 1] != 's' && field[bang + 1] != 'r')) {
        return Error("str.format() conversions other than !s and !r are not supported");
      }
      conversion = field[bang + 1];
      field.resize(bang);
    }
    if (field.find_first_of(":.[{") != std::string::npos) {
      return Error("str.format() fields with format specifications, attributes or indexes are not supported");
    }
    const Value* value = nullptr;
    if (field.empty() || std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      size_t index;
      if (field.empty()) {
        used_auto = true;
        index = auto_index++;
      } else {
        used_manual = true;
        index = field.size() > 9 ? SIZE_MAX : std::stoul(field);
      }
      if (used_auto && used_manual) {
        return Error("cannot switch from automatic field numbering to manual field specification");
      }
      if (index >= args.positional.size()) {
        return Error(absl::StrCat("Replacement index ", index, " out of range for positional args tuple"));
      }
      value = &args.positional[index];
    } else {
      for (const auto& [k, v] : args.keyword) {
        if (k == field) value = &v;
      }
      if (value == nullptr) return Error(absl::StrCat("KeyError: ", StringRepr(field)));
    }
    const size_t room = static_cast<size_t>(state.limits().max_output_bytes);
    out += conversion == 'r' ? PyRepr(*value, room) : PyStr(*value, room);
    if (absl::Status s = state.CheckSize(out.size()); !s.ok()) return s;
  }
  if (absl::Status s = state.CheckString(out.size()); !s.ok()) return s;
  return Value::String(std::move(out));
}

absl::StatusOr<Value> DictMethod(const Value& d, std::string_view name, const CallArgs& args,
                                 RenderState& state) {
  if (name == "get") {
    absl::StatusOr<std::vector<Value>> a =
        BindArgs(args, {{"key", std::nullopt}, {"default", Value::None()}}, "dict.get()");
    if (!a.ok()) return a.status();
    if (!IsHashable((*a)[0])) return Error(absl::StrCat("unhashable type: '", (*a)[0].TypeName(), "'"));
    const Value* v = d.AsDict().Find((*a)[0]);
    return v ? *v : (*a)[1];
  }
  if (!args.empty()) return Error(absl::StrCat("dict.", std::string(name), "() takes no arguments"));
  if (name == "copy") return d;
  const auto& entries = d.AsDict().entries;
  if (absl::Status s = state.CheckItems(entries.size() * 3); !s.ok()) return s;
  std::vector<Value> out;
  out.reserve(entries.size());
  for (const auto& [k, v] : entries) {
    if (name == "keys") {
      out.push_back(k);
    } else if (name == "values") {
      out.push_back(v);
    } else {
      out.push_back(Value::List({k, v}, /*is_tuple=*/true));
    }
  }
  const ListFlavor flavor = name == "keys" ? ListFlavor::kDictKeys
                                           : (name == "values" ? ListFlavor::kDictValues : ListFlavor::kDictItems);
  return Value::DictView(std::move(out), flavor);
}

absl::StatusOr<Value> ListMethod(const Value& l, std::string_view name, const CallArgs& args,
                                 RenderState& state) {
  if (name == "copy") {
    if (!args.empty()) return Error("list.copy() takes no arguments");
    return l;
  }
  absl::StatusOr<std::vector<Value>> a = BindArgs(args, {{"value", std::nullopt}}, absl::StrCat("list.", std::string(name), "()"));
  if (!a.ok()) return a.status();
  const auto& items = l.AsList().items;
  if (absl::Status s = state.Charge(static_cast<int64_t>(items.size())); !s.ok()) return s;
  int64_t count = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!PyEquals(items[i], (*a)[0])) continue;
    if (name == "index") return Value::Int(static_cast<int64_t>(i));
    ++count;
  }
  if (name == "index") return Error(absl::StrCat(ShortRepr((*a)[0]), " is not in list"));
  return Value::Int(count);
}

Value BoundMethod(const Value& obj, std::string_view name) {
  CallableData fn;
  fn.kind = CallableData::Kind::kMethod;
  fn.name = std::string(name);
  fn.receiver = std::make_shared<const Value>(obj);
  return Value::Callable(std::move(fn));
}

Value Unsafe(const Value& obj, std::string_view name) {
  return Value::Undefined(absl::StrCat("access to attribute ", StringRepr(std::string(name)), " of ",
                                       StringRepr(obj.TypeName()), " object is unsafe."));
}

}  // namespace

std::optional<Value> LookupMethod(const Value& obj, std::string_view name) {
  switch (obj.kind()) {
    case Value::Kind::kString:
      if (OneOf(name, kStrSupported) || OneOf(name, kStrOther)) return BoundMethod(obj, name);
      return std::nullopt;
    case Value::Kind::kDict:
      if (OneOf(name, kDictMutators)) return Unsafe(obj, name);
      if (OneOf(name, kDictSupported) || name == "fromkeys") return BoundMethod(obj, name);
      return std::nullopt;
    case Value::Kind::kList:
      if (obj.AsList().flavor != ListFlavor::kPlain) {
        if (obj.AsList().flavor == ListFlavor::kRange && (name == "count" || name == "index")) {
          return BoundMethod(obj, name);
        }
        return std::nullopt;
      }
      if (obj.AsList().is_tuple) {
        if (name == "count" || name == "index") return BoundMethod(obj, name);
        return std::nullopt;
      }
      if (OneOf(name, kListMutators)) return Unsafe(obj, name);
      if (OneOf(name, kListSupported)) return BoundMethod(obj, name);
      return std::nullopt;
    default: return std::nullopt;
  }
}

absl::StatusOr<Value> CallMethod(const Value& receiver, std::string_view name, const CallArgs& args,
                                 RenderState& state) {
  switch (receiver.kind()) {
    case Value::Kind::kString:
      if (OneOf(name, kStrSupported)) return StrMethod(receiver.AsString(), name, args, state);
      break;
    case Value::Kind::kDict:
      if (OneOf(name, kDictSupported)) return DictMethod(receiver, name, args, state);
      break;
    case Value::Kind::kList:
      if (OneOf(name, kListSupported)) return ListMethod(receiver, name, args, state);
      break;
    default: break;
  }
  return Error(absl::StrCat("method ", receiver.TypeName(), ".", std::string(name), "() is not supported"));
}

}  // namespace adapterd::tmpl
