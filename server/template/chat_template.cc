#include "server/template/chat_template.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/template/template_parser.h"
#include "server/template/template_renderer.h"
#include "server/template/text_util.h"

namespace adapterd::tmpl {
namespace {

// Converts JSON to a template value; `path` names the place in errors.
class JsonConverter {
 public:
  explicit JsonConverter(const TemplateLimits& limits) : limits_(limits) {}

  absl::StatusOr<Value> Convert(const nlohmann::ordered_json& j, int depth, const std::string& path) {
    if (++nodes_ > limits_.max_value_nodes) {
      return absl::InvalidArgumentError(absl::StrCat("the chat template context has more than ",
                                                     limits_.max_value_nodes, " elements"));
    }
    if (depth > limits_.max_value_depth) {
      return absl::InvalidArgumentError(absl::StrCat("the chat template context is nested more than ",
                                                     limits_.max_value_depth, " levels deep at ", path));
    }
    switch (j.type()) {
      case nlohmann::ordered_json::value_t::null: return Value::None();
      case nlohmann::ordered_json::value_t::boolean: return Value::Bool(j.get<bool>());
      case nlohmann::ordered_json::value_t::number_integer: return Value::Int(j.get<int64_t>());
      case nlohmann::ordered_json::value_t::number_unsigned:
        if (j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
          return absl::InvalidArgumentError(absl::StrCat("chat template context: ", path,
                                                         " is an integer beyond 64 bits"));
        }
        return Value::Int(static_cast<int64_t>(j.get<uint64_t>()));
      case nlohmann::ordered_json::value_t::number_float: return Value::Float(j.get<double>());
      case nlohmann::ordered_json::value_t::string: return String(j.get_ref<const std::string&>(), path);
      case nlohmann::ordered_json::value_t::array: {
        std::vector<Value> items;
        items.reserve(j.size());
        for (size_t i = 0; i < j.size(); ++i) {
          absl::StatusOr<Value> v = Convert(j[i], depth + 1, absl::StrCat(path, "[", i, "]"));
          if (!v.ok()) return v;
          items.push_back(std::move(*v));
        }
        return Value::List(std::move(items));
      }
      case nlohmann::ordered_json::value_t::object: {
        std::vector<std::pair<Value, Value>> entries;
        entries.reserve(j.size());
        for (auto it = j.begin(); it != j.end(); ++it) {
          absl::StatusOr<Value> key = String(it.key(), path);
          if (!key.ok()) return key;
          absl::StatusOr<Value> v = Convert(it.value(), depth + 1, absl::StrCat(path, ".", it.key()));
          if (!v.ok()) return v;
          entries.emplace_back(std::move(*key), std::move(*v));
        }
        return Value::Dict(std::move(entries));
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("chat template context: ", path, " has a type JSON text cannot hold"));
    }
  }

 private:
  static absl::StatusOr<Value> String(const std::string& s, const std::string& path) {
    if (text::FindInvalidUtf8(s) != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template context: a string in ", path, " is not valid UTF-8"));
    }
    return Value::String(s);
  }

  const TemplateLimits& limits_;
  int64_t nodes_ = 0;
};

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source, const TemplateLimits& limits) {
  if (source.size() > static_cast<uint64_t>(limits.max_source_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("chat template of ", source.size(),
                                                   " bytes exceeds the limit of ", limits.max_source_bytes,
                                                   " bytes"));
  }
  absl::StatusOr<std::unique_ptr<Body>> body = TemplateParser::Parse(source);
  if (!body.ok()) return body.status();
  return ChatTemplate(std::shared_ptr<const Body>(std::move(*body)), limits);
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& context) const {
  if (!context.is_object()) {
    return absl::InvalidArgumentError("the chat template context must be a JSON object");
  }
  JsonConverter converter(limits_);
  absl::StatusOr<Value> root = converter.Convert(context, 0, "context");
  if (!root.ok()) return root.status();
  TemplateRenderer renderer(std::move(*root), limits_);
  return renderer.Render(*body_);
}

absl::StatusOr<std::string> RenderChat(const ChatTemplate& t, const nlohmann::ordered_json& messages,
                                       bool add_generation_prompt, const std::string& bos_token,
                                       const std::string& eos_token, const nlohmann::ordered_json* tools) {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be a JSON array");
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::ordered_json& m = messages[i];
    if (!m.is_object()) return absl::InvalidArgumentError(absl::StrCat("messages[", i, "] is not an object"));
    const auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "] has no string \"role\""));
    }
  }
  if (tools != nullptr && !tools->is_array() && !tools->is_null()) {
    return absl::InvalidArgumentError("tools must be a JSON array");
  }
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  context["messages"] = messages;
  context["tools"] = tools != nullptr ? *tools : nlohmann::ordered_json(nullptr);
  context["documents"] = nullptr;
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = bos_token;
  context["eos_token"] = eos_token;
  return t.Render(context);
}

}  // namespace adapterd::tmpl
