// Reading the JSON fields that PEFT configs share (module selections, flags).
#ifndef ADAPTERD_ADAPTERS_PEFT_FIELDS_H_
#define ADAPTERD_ADAPTERS_PEFT_FIELDS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace adapterd::adapters {

using OrderedJson = nlohmann::ordered_json;  // keys keep the file's order

// INVALID_ARGUMENT "<label>: <what>".
absl::Status ConfigError(const std::string& label, const std::string& what);

// Whether `key` is present with a value that turns a feature on (true, a
// non-empty list/object/string, or any number).
bool IsSet(const OrderedJson& j, const char* key);

// The config keys prompt tuning and prefix tuning share: no
// modules_to_save, num_transformer_submodules 1 (decoder-only) when given,
// and num_virtual_tokens, a positive integer that leaves room in a context
// of `max_positions` (FAILED_PRECONDITION otherwise). Returns the number of
// virtual tokens; errors name `label` and the key.
absl::StatusOr<int64_t> ParsePromptLearning(const OrderedJson& j, const std::string& label, int64_t max_positions);

// A PEFT module selection such as target_modules: a list of names that match
// a module when equal to it or to its last dotted components, or one
// regular expression that must match the whole module name. A plain value.
struct ModuleSelector {
  std::vector<std::string> names;
  std::optional<std::string> regex;
  bool Matches(const std::string& module_name) const;
};

// Checks a regular expression from a config before it is ever run:
// ECMAScript syntax, at most kMaxPatternLength characters, and no
// quantifier applied to a quantifier or to alternatives ("a**", "(a+)*",
// "(a|aa)+"), the shapes whose backtracking grows exponentially with the
// input, and at most kMaxPatternRepeats repetitions. std::regex
// backtracks and recurses, so without this one hostile config could hang a
// loader thread. `what` names the key in the message.
inline constexpr size_t kMaxPatternLength = 256;
inline constexpr int kMaxPatternRepeats = 4;
absl::Status CheckPattern(const std::string& pattern, const std::string& label, const std::string& what);

// Parses the value of `key` (a list of strings or a regex string).
absl::Status ParseSelector(const OrderedJson& v, const std::string& label, const char* key,
                           ModuleSelector* out);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_PEFT_FIELDS_H_
