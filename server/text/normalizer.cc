#include "server/text/normalizer.h"

#include <utility>

#include "utf8proc.h"

namespace adapterd::text {
namespace {

std::string StripWhitespace(std::string_view s, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      size_t pos = b;
      if (!IsWhitespace(NextCodePoint(s, &pos))) break;
      b = pos;
    }
  }
  if (right) {
    while (e > b) {
      size_t start = e - 1;
      while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      size_t pos = start;
      if (!IsWhitespace(NextCodePoint(s, &pos))) break;
      e = start;
    }
  }
  return std::string(s.substr(b, e - b));
}

std::string StripAccents(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t start = pos;
    const char32_t cp = NextCodePoint(s, &pos);
    const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
    if (c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME) continue;
    out.append(s.substr(start, pos - start));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> Normalizer::FromJson(const Json& j, const std::string& path) {
  auto n = std::unique_ptr<Normalizer>(new Normalizer());
  if (!j.is_null()) {
    if (absl::Status s = Parse(j, path, &n->steps_); !s.ok()) return s;
  }
  return n;
}

absl::Status Normalizer::Parse(const Json& j, const std::string& path, std::vector<Step>* steps) {
  absl::StatusOr<std::string> type = ComponentType(j, path);
  if (!type.ok()) return type.status();
  Step step;
  if (*type == "Sequence") {
    absl::StatusOr<const Json*> list = RequiredArray(j, "normalizers", path);
    if (!list.ok()) return list.status();
    for (size_t i = 0; i < (*list)->size(); ++i) {
      if (absl::Status s = Parse((**list)[i], JsonIndex(JsonChild(path, "normalizers"), i), steps); !s.ok()) return s;
    }
    return absl::OkStatus();
  } else if (*type == "NFC" || *type == "NFD" || *type == "NFKC" || *type == "NFKD") {
    step.kind = Kind::kNormalForm;
    step.form = *type == "NFC"   ? NormalForm::kNfc
                : *type == "NFD" ? NormalForm::kNfd
                : *type == "NFKC" ? NormalForm::kNfkc
                                  : NormalForm::kNfkd;
  } else if (*type == "Lowercase") {
    step.kind = Kind::kLowercase;
  } else if (*type == "StripAccents") {
    step.kind = Kind::kStripAccents;
  } else if (*type == "Strip") {
    step.kind = Kind::kStrip;
    absl::StatusOr<std::optional<bool>> l = OptionalBool(j, "strip_left", path);
    if (!l.ok()) return l.status();
    absl::StatusOr<std::optional<bool>> r = OptionalBool(j, "strip_right", path);
    if (!r.ok()) return r.status();
    step.left = l->value_or(true);
    step.right = r->value_or(true);
  } else if (*type == "Prepend") {
    step.kind = Kind::kPrepend;
    absl::StatusOr<std::string> p = RequiredString(j, "prepend", path);
    if (!p.ok()) return p.status();
    step.text = *std::move(p);
  } else if (*type == "Replace") {
    step.kind = Kind::kReplace;
    absl::StatusOr<JsonPattern> jp = PatternField(j, "pattern", path);
    if (!jp.ok()) return jp.status();
    absl::StatusOr<SplitPattern> sp = SplitPattern::FromJson(*jp, JsonChild(path, "pattern"));
    if (!sp.ok()) return sp.status();
    step.pattern = std::make_unique<SplitPattern>(*std::move(sp));
    absl::StatusOr<std::string> c = RequiredString(j, "content", path);
    if (!c.ok()) return c.status();
    step.text = *std::move(c);
  } else {
    return Unsupported(path, *type);
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status Normalizer::Apply(std::string* s) const {
  std::string tmp;
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kNormalForm:
        *s = Normalize(*s, step.form);
        break;
      case Kind::kLowercase:
        *s = ToLower(*s);
        break;
      case Kind::kStrip:
        *s = StripWhitespace(*s, step.left, step.right);
        break;
      case Kind::kStripAccents:
        *s = StripAccents(*s);
        break;
      case Kind::kPrepend:
        if (!s->empty()) s->insert(0, step.text);
        break;
      case Kind::kReplace:
        if (absl::Status st = step.pattern->ReplaceAll(*s, step.text, &tmp); !st.ok()) return st;
        s->swap(tmp);
        break;
    }
  }
  return absl::OkStatus();
}

}  // namespace adapterd::text
