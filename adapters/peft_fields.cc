#include "adapters/peft_fields.h"

#include <regex>
#include <vector>

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

absl::Status CheckPattern(const std::string& pattern, const std::string& label, const std::string& what) {
  if (pattern.size() > kMaxPatternLength) {
    return ConfigError(label, absl::StrCat("'", what, "' is ", pattern.size(), " characters; patterns are limited to ",
                                           kMaxPatternLength));
  }
  // One entry per open group: whether a quantifier occurs inside it.
  std::vector<bool> groups;
  enum class Prev { kAtom, kQuantifier, kLazy, kQuantifiedGroup };
  Prev prev = Prev::kAtom;
  int unbounded = 0;  // '*', '+' and '{': each multiplies the backtracking
  auto nested = [&] {
    return ConfigError(label, absl::StrCat("'", what, "': a quantifier applied to a quantifier (as in \"a**\" or "
                                           "\"(a+)*\") is not accepted; its matching time can explode"));
  };
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char ch = pattern[i];
    if (ch == '*' || ch == '+' || ch == '?' || ch == '{') {
      if (ch == '?' && prev == Prev::kQuantifier) {  // "*?": the lazy form of one quantifier
        prev = Prev::kLazy;
        continue;
      }
      // An optional group ("(.*\.)?") is harmless; repeating one that holds a
      // quantifier, or quantifying a quantifier, is not.
      const bool optional_group = ch == '?' && prev == Prev::kQuantifiedGroup;
      if (prev == Prev::kQuantifier || prev == Prev::kLazy || (prev == Prev::kQuantifiedGroup && !optional_group)) {
        return nested();
      }
      if (!groups.empty()) groups.back() = true;
      if (ch != '?' && ++unbounded > kMaxPatternRepeats) {
        return ConfigError(label, absl::StrCat("'", what, "' has more than ", kMaxPatternRepeats,
                                               " repetitions ('*', '+', '{'); simplify the pattern"));
      }
      if (ch == '{') {
        while (i < pattern.size() && pattern[i] != '}') ++i;
      }
      prev = Prev::kQuantifier;
      continue;
    }
    prev = Prev::kAtom;
    if (ch == '\\') {
      ++i;  // the escaped character is a literal (or a class such as \d)
    } else if (ch == '[') {
      // A bracket expression is one atom: skip to its closing ']'.
      size_t j = i + 1;
      if (j < pattern.size() && pattern[j] == '^') ++j;
      if (j < pattern.size() && pattern[j] == ']') ++j;
      while (j < pattern.size() && pattern[j] != ']') j += pattern[j] == '\\' ? 2 : 1;
      i = j;
    } else if (ch == '(') {
      groups.push_back(false);
    } else if (ch == '|' && !groups.empty()) {
      groups.back() = true;  // repeating alternatives that overlap backtracks exponentially too
    } else if (ch == ')' && !groups.empty()) {
      const bool quantified = groups.back();
      groups.pop_back();
      if (quantified) {
        if (!groups.empty()) groups.back() = true;
        prev = Prev::kQuantifiedGroup;
      }
    }
  }
  try {
    std::regex re(pattern);
  } catch (const std::regex_error& e) {
    return ConfigError(label, absl::StrCat("'", what, "' is not a valid regular expression: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status ParseSelector(const OrderedJson& v, const std::string& label, const char* key,
                           ModuleSelector* out) {
  if (v.is_string()) {
    out->regex = v.get<std::string>();
    return CheckPattern(*out->regex, label, key);
  }
  if (!v.is_array()) return ConfigError(label, absl::StrCat("'", key, "' must be a list or a string"));
  for (const OrderedJson& s : v) {
    if (!s.is_string()) return ConfigError(label, absl::StrCat("'", key, "' must hold strings"));
    out->names.push_back(s.get<std::string>());
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ParsePromptLearning(const OrderedJson& j, const std::string& label, int64_t max_positions) {
  if (IsSet(j, "modules_to_save")) {
    return ConfigError(label, absl::StrCat("'modules_to_save' is not supported (", j["modules_to_save"].dump(), ")"));
  }
  if (auto s = j.find("num_transformer_submodules"); s != j.end() && !s->is_null() && *s != 1) {
    return ConfigError(label, absl::StrCat("'num_transformer_submodules' is ", s->dump(),
                                           "; only 1 (decoder-only models) is supported"));
  }
  auto v = j.find("num_virtual_tokens");
  if (v == j.end() || !v->is_number_integer() || v->get<int64_t>() < 1) {
    return ConfigError(label, "'num_virtual_tokens' must be a positive integer");
  }
  const int64_t n = v->get<int64_t>();
  if (n >= max_positions) {
    return absl::FailedPreconditionError(absl::StrCat(label, ": 'num_virtual_tokens' ", n,
                                                      " leaves no room in the context length ", max_positions));
  }
  return n;
}

}  // namespace adapterd::adapters
