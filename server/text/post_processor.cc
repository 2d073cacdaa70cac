#include "server/text/post_processor.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace adapterd::text {

absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessor::FromJson(const Json& j, const std::string& path) {
  auto p = std::unique_ptr<PostProcessor>(new PostProcessor());
  if (!j.is_null()) {
    if (absl::Status s = Parse(j, path, &p->templates_); !s.ok()) return s;
  }
  return p;
}

std::unique_ptr<PostProcessor> PostProcessor::Wrap(std::vector<int32_t> prefix, std::vector<int32_t> suffix) {
  auto p = std::unique_ptr<PostProcessor>(new PostProcessor());
  std::vector<int32_t> t = std::move(prefix);
  t.push_back(kSequence);
  t.insert(t.end(), suffix.begin(), suffix.end());
  p->templates_.push_back(std::move(t));
  return p;
}

absl::StatusOr<int32_t> PostProcessor::ParseTokenPair(const Json& j, const char* key, const std::string& path) {
  const Json* v = JsonMember(j, key);
  const std::string p = JsonChild(path, key);
  if (v == nullptr || !v->is_array() || v->size() != 2 || !(*v)[0].is_string() ||
      !(*v)[1].is_number_integer() || (*v)[1].get<int64_t>() < 0 || (*v)[1].get<int64_t>() >= (int64_t{1} << 24)) {
    return JsonError(p, "must be a [token, id] pair");
  }
  return static_cast<int32_t>((*v)[1].get<int64_t>());
}

absl::StatusOr<std::vector<int32_t>> PostProcessor::ParseTemplate(const Json& j, const std::string& path) {
  absl::StatusOr<const Json*> single = RequiredArray(j, "single", path);
  if (!single.ok()) return single.status();
  const Json* specials = JsonMember(j, "special_tokens");
  const std::string sp_path = JsonChild(path, "special_tokens");
  if (specials != nullptr && !specials->is_object()) return JsonError(sp_path, "must be an object");
  std::vector<int32_t> out;
  for (size_t i = 0; i < (*single)->size(); ++i) {
    const Json& item = (**single)[i];
    const std::string ip = JsonIndex(JsonChild(path, "single"), i);
    if (JsonMember(item, "Sequence") != nullptr) {
      out.push_back(kSequence);
      continue;
    }
    const Json* st = JsonMember(item, "SpecialToken");
    if (st == nullptr) return JsonError(ip, "must be {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    absl::StatusOr<std::string> name = RequiredString(*st, "id", JsonChild(ip, "SpecialToken"));
    if (!name.ok()) return name.status();
    const Json* def = specials == nullptr ? nullptr : JsonMember(*specials, *name);
    if (def == nullptr) return JsonError(sp_path, absl::StrCat("has no entry for \"", *name, "\" used by ", ip));
    const std::string dp = JsonChild(sp_path, *name);
    absl::StatusOr<const Json*> ids = RequiredArray(*def, "ids", dp);
    if (!ids.ok()) return ids.status();
    for (const Json& id : **ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (int64_t{1} << 24)) {
        return JsonError(JsonChild(dp, "ids"), absl::StrCat("has an invalid id ", id.dump()));
      }
      out.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  return out;
}

absl::Status PostProcessor::Parse(const Json& j, const std::string& path,
                                  std::vector<std::vector<int32_t>>* templates) {
  absl::StatusOr<std::string> type = ComponentType(j, path);
  if (!type.ok()) return type.status();
  if (*type == "ByteLevel") return absl::OkStatus();
  if (*type == "Sequence") {
    absl::StatusOr<const Json*> list = RequiredArray(j, "processors", path);
    if (!list.ok()) return list.status();
    for (size_t i = 0; i < (*list)->size(); ++i) {
      const std::string p = JsonIndex(JsonChild(path, "processors"), i);
      if (absl::Status s = Parse((**list)[i], p, templates); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (*type == "TemplateProcessing") {
    absl::StatusOr<std::vector<int32_t>> t = ParseTemplate(j, path);
    if (!t.ok()) return t.status();
    templates->push_back(*std::move(t));
    return absl::OkStatus();
  }
  if (*type == "RobertaProcessing" || *type == "BertProcessing") {
    absl::StatusOr<int32_t> cls = ParseTokenPair(j, "cls", path);
    if (!cls.ok()) return cls.status();
    absl::StatusOr<int32_t> sep = ParseTokenPair(j, "sep", path);
    if (!sep.ok()) return sep.status();
    templates->push_back({*cls, kSequence, *sep});
    return absl::OkStatus();
  }
  return Unsupported(path, *type);
}

std::vector<int32_t> PostProcessor::Apply(std::vector<int32_t> ids) const {
  for (const std::vector<int32_t>& t : templates_) {
    std::vector<int32_t> out;
    out.reserve(ids.size() + t.size());
    for (int32_t item : t) {
      if (item == kSequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.push_back(item);
      }
    }
    ids.swap(out);
  }
  return ids;
}

}  // namespace adapterd::text
