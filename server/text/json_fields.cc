#include "server/text/json_fields.h"

#include "absl/strings/str_cat.h"

namespace adapterd::text {

std::string JsonChild(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", std::string(key));
}

std::string JsonIndex(const std::string& path, size_t index) { return absl::StrCat(path, "[", index, "]"); }

absl::Status JsonError(const std::string& path, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, " ", std::string(what)));
}

const Json* JsonMember(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<bool>> OptionalBool(const Json& obj, std::string_view key, const std::string& path) {
  const Json* v = JsonMember(obj, key);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean()) return JsonError(JsonChild(path, key), absl::StrCat("must be a boolean, not ", v->dump()));
  return std::optional<bool>(v->get<bool>());
}

absl::StatusOr<std::optional<std::string>> OptionalString(const Json& obj, std::string_view key,
                                                          const std::string& path) {
  const Json* v = JsonMember(obj, key);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return JsonError(JsonChild(path, key), absl::StrCat("must be a string, not ", v->dump()));
  return std::optional<std::string>(v->get<std::string>());
}

absl::StatusOr<std::optional<int64_t>> OptionalInt(const Json& obj, std::string_view key, const std::string& path) {
  const Json* v = JsonMember(obj, key);
  if (v == nullptr) return std::optional<int64_t>();
  if (!v->is_number_integer()) {
    return JsonError(JsonChild(path, key), absl::StrCat("must be an integer, not ", v->dump()));
  }
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return JsonError(JsonChild(path, key), "is out of range");
  }
  return std::optional<int64_t>(v->get<int64_t>());
}

absl::StatusOr<std::optional<double>> OptionalNumber(const Json& obj, std::string_view key,
                                                     const std::string& path) {
  const Json* v = JsonMember(obj, key);
  if (v == nullptr) return std::optional<double>();
  if (!v->is_number()) return JsonError(JsonChild(path, key), absl::StrCat("must be a number, not ", v->dump()));
  return std::optional<double>(v->get<double>());
}

absl::StatusOr<std::string> RequiredString(const Json& obj, std::string_view key, const std::string& path) {
  absl::StatusOr<std::optional<std::string>> v = OptionalString(obj, key, path);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return JsonError(JsonChild(path, key), "is missing");
  return **v;
}

absl::StatusOr<const Json*> RequiredArray(const Json& obj, std::string_view key, const std::string& path) {
  const Json* v = JsonMember(obj, key);
  if (v == nullptr) return JsonError(JsonChild(path, key), "is missing");
  if (!v->is_array()) return JsonError(JsonChild(path, key), "must be an array");
  return v;
}

absl::StatusOr<std::string> ComponentType(const Json& obj, const std::string& path) {
  if (!obj.is_object()) return JsonError(path, absl::StrCat("must be an object, not ", obj.dump()));
  return RequiredString(obj, "type", path);
}

absl::Status Unsupported(const std::string& path, std::string_view type) {
  return JsonError(JsonChild(path, "type"), absl::StrCat("\"", std::string(type), "\" is not supported"));
}

absl::StatusOr<JsonPattern> PatternField(const Json& obj, std::string_view key, const std::string& path) {
  const std::string p = JsonChild(path, key);
  const Json* v = JsonMember(obj, key);
  if (v == nullptr) return JsonError(p, "is missing");
  if (!v->is_object() || v->size() != 1) {
    return JsonError(p, "must be {\"String\": ...} or {\"Regex\": ...}");
  }
  JsonPattern out;
  if (const Json* s = JsonMember(*v, "String"); s != nullptr && s->is_string()) {
    out.text = s->get<std::string>();
  } else if (const Json* r = JsonMember(*v, "Regex"); r != nullptr && r->is_string()) {
    out.is_regex = true;
    out.text = r->get<std::string>();
  } else {
    return JsonError(p, "must be {\"String\": ...} or {\"Regex\": ...} with a string value");
  }
  return out;
}

}  // namespace adapterd::text
