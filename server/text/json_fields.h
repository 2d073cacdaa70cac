// Typed, path-aware access to the fields of tokenizer.json and
// tokenizer_config.json. Every error is INVALID_ARGUMENT and names the JSON
// path of the offending value (e.g. `pre_tokenizer.pretokenizers[1].type`).
#ifndef ADAPTERD_SERVER_TEXT_JSON_FIELDS_H_
#define ADAPTERD_SERVER_TEXT_JSON_FIELDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace adapterd::text {

using Json = nlohmann::json;

// "a.b" for key b of path a; "b" when a is empty.
std::string JsonChild(const std::string& path, std::string_view key);
// "a[3]".
std::string JsonIndex(const std::string& path, size_t index);

absl::Status JsonError(const std::string& path, std::string_view what);

// The member `key` of object `obj`, or nullptr when it is absent or null.
const Json* JsonMember(const Json& obj, std::string_view key);

// Optional scalar members: nullopt when absent or null, an error naming
// `path.key` when present with another type.
absl::StatusOr<std::optional<bool>> OptionalBool(const Json& obj, std::string_view key, const std::string& path);
absl::StatusOr<std::optional<std::string>> OptionalString(const Json& obj, std::string_view key,
                                                          const std::string& path);
absl::StatusOr<std::optional<int64_t>> OptionalInt(const Json& obj, std::string_view key, const std::string& path);
absl::StatusOr<std::optional<double>> OptionalNumber(const Json& obj, std::string_view key,
                                                     const std::string& path);

// Required members.
absl::StatusOr<std::string> RequiredString(const Json& obj, std::string_view key, const std::string& path);
absl::StatusOr<const Json*> RequiredArray(const Json& obj, std::string_view key, const std::string& path);

// The `type` tag of a component object at `path` (which must be an object).
absl::StatusOr<std::string> ComponentType(const Json& obj, const std::string& path);
absl::Status Unsupported(const std::string& path, std::string_view type);

// A `{"String": s}` or `{"Regex": r}` pattern object.
struct JsonPattern {
  bool is_regex = false;
  std::string text;
};
absl::StatusOr<JsonPattern> PatternField(const Json& obj, std::string_view key, const std::string& path);

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_JSON_FIELDS_H_
