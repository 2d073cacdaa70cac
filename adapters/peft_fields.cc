#include "adapters/peft_fields.h"

#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace adapterd::adapters {

absl::Status ConfigError(const std::string& label, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(label, ": ", what));
}

bool IsSet(const OrderedJson& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_array() || it->is_object() || it->is_string()) return !it->empty();
  return true;
}

bool ModuleSelector::Matches(const std::string& name) const {
  if (regex) {
    try {
      return std::regex_match(name, std::regex(*regex));
    } catch (const std::regex_error&) {
      return false;
    }
  }
  for (const std::string& t : names) {
    if (name == t || absl::EndsWith(name, "." + t)) return true;
  }
  return false;
}

absl::Status ParseSelector(const OrderedJson& v, const std::string& label, const char* key,
                           ModuleSelector* out) {
  if (v.is_string()) {
    out->regex = v.get<std::string>();
    try {
      std::regex re(*out->regex);
    } catch (const std::regex_error& e) {
      return ConfigError(label, absl::StrCat("'", key, "' is not a valid regular expression: ", e.what()));
    }
    return absl::OkStatus();
  }
  if (!v.is_array()) return ConfigError(label, absl::StrCat("'", key, "' must be a list or a string"));
  for (const OrderedJson& s : v) {
    if (!s.is_string()) return ConfigError(label, absl::StrCat("'", key, "' must hold strings"));
    out->names.push_back(s.get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace adapterd::adapters
