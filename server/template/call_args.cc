#include "server/template/call_args.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace adapterd::tmpl {

absl::StatusOr<std::vector<Value>> BindArgs(const CallArgs& args, std::initializer_list<Param> params,
                                            std::string_view what) {
  if (args.positional.size() > params.size()) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(what), " takes at most ", params.size(),
                                                   " argument(s), got ", args.positional.size()));
  }
  std::vector<std::optional<Value>> bound(params.size());
  for (size_t i = 0; i < args.positional.size(); ++i) bound[i] = args.positional[i];
  for (const auto& [name, value] : args.keyword) {
    size_t i = 0;
    for (const Param& p : params) {
      if (name == p.name) break;
      ++i;
    }
    if (i == params.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(what), " got an unexpected keyword argument '", std::string(name), "'"));
    }
    if (bound[i].has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(what), " got multiple values for argument '", std::string(name), "'"));
    }
    bound[i] = value;
  }
  std::vector<Value> out;
  out.reserve(params.size());
  size_t i = 0;
  for (const Param& p : params) {
    if (bound[i].has_value()) {
      out.push_back(*bound[i]);
    } else if (p.default_value.has_value()) {
      out.push_back(*p.default_value);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(what), " is missing the required argument '", p.name, "'"));
    }
    ++i;
  }
  return out;
}

absl::StatusOr<int64_t> IntArg(const Value& v, std::string_view what) {
  if (v.kind() == Value::Kind::kInt || v.kind() == Value::Kind::kBool) return v.AsInt();
  if (v.is_undefined()) return absl::InvalidArgumentError(v.UndefinedMessage());
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(what), ": '", v.TypeName(), "' object cannot be interpreted as an integer"));
}

absl::StatusOr<std::string> StringArg(const Value& v, std::string_view what) {
  if (v.is_string()) return v.AsString();
  if (v.is_undefined()) return absl::InvalidArgumentError(v.UndefinedMessage());
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(what), " must be str, not ", v.TypeName()));
}

}  // namespace adapterd::tmpl
