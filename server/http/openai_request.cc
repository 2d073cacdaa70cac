#include "server/http/openai_request.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/http/http_error.h"

namespace adapterd::http {
namespace {

using nlohmann::json;

// INVALID_ARGUMENT about the field `param` ("" for the body as a whole).
absl::Status Invalid(std::string_view param, std::string_view message) {
  absl::Status st = absl::InvalidArgumentError(absl::string_view(message.data(), message.size()));
  return param.empty() ? st : WithParam(std::move(st), param);
}

// Whether `j` is an object whose "type" is the string `want` (json::value
// would throw where "type" holds another kind of value).
bool TypeIs(const json& j, std::string_view want) {
  if (!j.is_object()) return false;
  const auto it = j.find("type");
  return it != j.end() && it->is_string() && it->get_ref<const std::string&>() == want;
}

// The deepest nesting of arrays and objects in `body`, stopping early once
// it passes `limit`; the parser is never handed deeper input.
int NestingDepth(std::string_view body, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) break;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

absl::StatusOr<json> ParseObject(std::string_view body, int max_depth) {
  if (NestingDepth(body, max_depth) > max_depth) {
    return Invalid("", absl::StrCat("the request body nests deeper than ", max_depth, " levels"));
  }
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("", "the request body is not valid JSON");
  if (!j.is_object()) return Invalid("", "the request body must be a JSON object");
  return j;
}

// Typed access to the fields of one request object; absent and null fields
// read as nullopt, and a field of the wrong type is an error naming it.
class Fields {
 public:
  explicit Fields(const json& obj) : obj_(obj) {}

  const json* Get(const char* name) const {
    auto it = obj_.find(name);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  absl::StatusOr<std::optional<bool>> Bool(const char* name) const {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) return Invalid(name, absl::StrCat(name, " must be a boolean"));
    return v->get<bool>();
  }
  absl::StatusOr<std::optional<int64_t>> Int(const char* name, int64_t min, int64_t max) const {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number_integer()) return Invalid(name, absl::StrCat(name, " must be an integer"));
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(max)) {
      return Invalid(name, absl::StrCat(name, " must be at most ", max));
    }
    const int64_t x = v->get<int64_t>();
    if (x < min) return Invalid(name, absl::StrCat(name, " must be at least ", min));
    if (x > max) return Invalid(name, absl::StrCat(name, " must be at most ", max));
    return x;
  }
  absl::StatusOr<std::optional<double>> Number(const char* name, double min, double max) const {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) return Invalid(name, absl::StrCat(name, " must be a number"));
    const double x = v->get<double>();
    if (!(x >= min && x <= max)) return Invalid(name, absl::StrCat(name, " must be in [", min, ", ", max, "]"));
    return x;
  }
  absl::StatusOr<std::optional<std::string>> String(const char* name) const {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return Invalid(name, absl::StrCat(name, " must be a string"));
    return v->get<std::string>();
  }

 private:
  const json& obj_;
};

#define ADAPTERD_ASSIGN_OR_RETURN(lhs, expr) \
  auto lhs##_or = (expr);                    \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto lhs = *std::move(lhs##_or)

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();

// Fields this server refuses rather than ignores, since ignoring them would
// change what the client gets.
absl::Status RefuseUnsupported(const Fields& f, ApiKind kind) {
  for (const char* name : {"frequency_penalty", "presence_penalty"}) {
    ADAPTERD_ASSIGN_OR_RETURN(p, f.Number(name, -2, 2));
    if (p.has_value() && *p != 0) return Invalid(name, absl::StrCat(name, " is not supported; send 0 or omit it"));
  }
  if (const json* b = f.Get("logit_bias"); b != nullptr && !(b->is_object() && b->empty())) {
    return Invalid("logit_bias", "logit_bias is not supported");
  }
  if (kind == ApiKind::kCompletion) {
    ADAPTERD_ASSIGN_OR_RETURN(echo, f.Bool("echo"));
    if (echo.value_or(false)) return Invalid("echo", "echo is not supported");
    if (f.Get("suffix") != nullptr) return Invalid("suffix", "suffix is not supported");
    return absl::OkStatus();
  }
  if (const json* t = f.Get("tools"); t != nullptr && !(t->is_array() && t->empty())) {
    return Invalid("tools", "tools (function calling) are not supported");
  }
  if (const json* r = f.Get("response_format"); r != nullptr) {
    if (!TypeIs(*r, "text")) {
      return Invalid("response_format", "response_format: only {\"type\": \"text\"} is supported");
    }
  }
  return absl::OkStatus();
}

// The sampling fields both endpoints share, into `out` (the prompt aside).
absl::Status ReadSampling(const Fields& f, core::GenerateRequest& out) {
  engine::SamplingParams& s = out.engine.sampling;
  ADAPTERD_ASSIGN_OR_RETURN(temperature, f.Number("temperature", 0, 1e6));
  s.temperature = temperature.value_or(1.0);
  ADAPTERD_ASSIGN_OR_RETURN(top_p, f.Number("top_p", 0, 1));
  s.top_p = top_p.value_or(1.0);
  ADAPTERD_ASSIGN_OR_RETURN(top_k, f.Int("top_k", -1, kMaxInt));
  s.top_k = std::max<int64_t>(top_k.value_or(0), 0);  // vLLM's -1 and 0 both mean off
  ADAPTERD_ASSIGN_OR_RETURN(seed, f.Int("seed", std::numeric_limits<int64_t>::min(), kMaxInt));
  if (seed.has_value()) s.seed = static_cast<uint64_t>(*seed);
  ADAPTERD_ASSIGN_OR_RETURN(ignore_eos, f.Bool("ignore_eos"));
  s.ignore_eos = ignore_eos.value_or(false);
  if (const json* ids = f.Get("stop_token_ids"); ids != nullptr) {
    if (!ids->is_array()) return Invalid("stop_token_ids", "stop_token_ids must be a list of integers");
    for (const json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0) {
        return Invalid("stop_token_ids", "stop_token_ids must be a list of non-negative integers");
      }
      s.stop_token_ids.push_back(id.get<int64_t>());
    }
  }
  if (const json* stop = f.Get("stop"); stop != nullptr) {
    if (stop->is_string()) {
      out.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const json& x : *stop) {
        if (!x.is_string()) return Invalid("stop", "stop must be a string or a list of strings");
        out.stop.push_back(x.get<std::string>());
      }
    } else {
      return Invalid("stop", "stop must be a string or a list of strings");
    }
  }
  ADAPTERD_ASSIGN_OR_RETURN(include_stop, f.Bool("include_stop_str_in_output"));
  out.include_stop_string = include_stop.value_or(false);
  ADAPTERD_ASSIGN_OR_RETURN(skip_special, f.Bool("skip_special_tokens"));
  out.skip_special_tokens = skip_special.value_or(true);
  return absl::OkStatus();
}

// adapterd's composition extension: "adapters": [{"id": ..., "weight": ...}],
// each weight a number (1 when absent). The core checks ids and weights.
absl::Status ReadAdapters(const Fields& f, core::GenerateRequest& out) {
  const json* list = f.Get("adapters");
  if (list == nullptr) return absl::OkStatus();
  if (!list->is_array() || list->empty()) {
    return Invalid("adapters", "adapters must be a non-empty list of {\"id\": string, \"weight\": number} objects");
  }
  for (size_t i = 0; i < list->size(); ++i) {
    const json& a = (*list)[i];
    const std::string param = absl::StrCat("adapters[", i, "]");
    if (!a.is_object()) return Invalid("adapters", absl::StrCat(param, " must be an object {\"id\", \"weight\"}"));
    const Fields af(a);
    const json* id = af.Get("id");
    if (id == nullptr || !id->is_string()) return Invalid("adapters", absl::StrCat(param, ".id must be a string"));
    const json* w = af.Get("weight");
    if (w != nullptr && !w->is_number()) return Invalid("adapters", absl::StrCat(param, ".weight must be a number"));
    out.adapters.push_back({id->get<std::string>(), w != nullptr ? w->get<double>() : 1.0});
  }
  return absl::OkStatus();
}

// model, n, stream, stream_options and return_token_ids.
absl::Status ReadEnvelope(const Fields& f, const OpenAiLimits& limits, OpenAiRequest& out) {
  ADAPTERD_ASSIGN_OR_RETURN(model, f.String("model"));
  out.model = model.value_or("");
  ADAPTERD_ASSIGN_OR_RETURN(n, f.Int("n", 1, limits.max_choices));
  out.n = static_cast<int>(n.value_or(1));
  ADAPTERD_ASSIGN_OR_RETURN(stream, f.Bool("stream"));
  out.stream = stream.value_or(false);
  if (const json* so = f.Get("stream_options"); so != nullptr) {
    if (!so->is_object()) return Invalid("stream_options", "stream_options must be an object");
    if (!out.stream) return Invalid("stream_options", "stream_options is only allowed with stream=true");
    ADAPTERD_ASSIGN_OR_RETURN(usage, Fields(*so).Bool("include_usage"));
    out.include_usage = usage.value_or(false);
  }
  ADAPTERD_ASSIGN_OR_RETURN(token_ids, f.Bool("return_token_ids"));
  out.return_token_ids = token_ids.value_or(false);
  return absl::OkStatus();
}

absl::Status CheckChoices(const OpenAiRequest& r, const OpenAiLimits& limits) {
  const int64_t choices = static_cast<int64_t>(r.n) * static_cast<int64_t>(r.prompts.size());
  if (choices > limits.max_choices) {
    return Invalid(r.prompts.size() > 1 ? "prompt" : "n",
                   absl::StrCat("n (", r.n, ") times the number of prompts (", r.prompts.size(),
                                ") must be at most ", limits.max_choices));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> TokenIds(const json& list, const std::string& param) {
  std::vector<int64_t> ids;
  ids.reserve(list.size());
  for (const json& x : list) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return Invalid(param, absl::StrCat(param, " must hold token ids: non-negative integers"));
    }
    ids.push_back(x.get<int64_t>());
  }
  if (ids.empty()) return Invalid(param, absl::StrCat(param, " must not be an empty list"));
  return ids;
}

// `prompt` (the body's field `field`) as one or more core prompts: a
// string, a list of token ids, a list of strings or a list of lists of
// token ids.
absl::Status ReadPrompts(const json* prompt, const core::GenerateRequest& proto, std::vector<core::GenerateRequest>& out,
                         const std::string& field = "prompt") {
  if (prompt == nullptr) return Invalid(field, absl::StrCat(field, " is required"));
  auto add_text = [&](std::string text) {
    out.push_back(proto);
    out.back().prompt_text = std::move(text);
  };
  auto add_ids = [&](std::vector<int64_t> ids) {
    out.push_back(proto);
    out.back().engine.prompt = std::move(ids);
  };
  if (prompt->is_string()) {
    add_text(prompt->get<std::string>());
    return absl::OkStatus();
  }
  const std::string shape = absl::StrCat(
      field, " must be a string, a list of token ids, a list of strings or a list of lists of token ids");
  if (!prompt->is_array() || prompt->empty()) return Invalid(field, shape);
  const json& first = (*prompt)[0];
  if (first.is_number()) {
    ADAPTERD_ASSIGN_OR_RETURN(ids, TokenIds(*prompt, field));
    add_ids(std::move(ids));
    return absl::OkStatus();
  }
  for (size_t i = 0; i < prompt->size(); ++i) {
    const json& p = (*prompt)[i];
    const std::string param = absl::StrCat(field, "[", i, "]");
    if (first.is_string() && p.is_string()) {
      add_text(p.get<std::string>());
    } else if (first.is_array() && p.is_array()) {
      ADAPTERD_ASSIGN_OR_RETURN(ids, TokenIds(p, param));
      add_ids(std::move(ids));
    } else {
      return Invalid(param, shape);
    }
  }
  return absl::OkStatus();
}

// A message's content: a string, null, or a list of text parts (joined by
// newlines, as vLLM joins them).
absl::StatusOr<std::string> MessageContent(const json& m, size_t index) {
  const std::string param = absl::StrCat("messages[", index, "].content");
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) return Invalid(param, absl::StrCat(param, " must be a string or a list of text parts"));
  std::vector<std::string> texts;
  for (size_t j = 0; j < it->size(); ++j) {
    const json& part = (*it)[j];
    const std::string part_param = absl::StrCat(param, "[", j, "]");
    if (!TypeIs(part, "text") || !part.contains("text") || !part["text"].is_string()) {
      return Invalid(part_param, absl::StrCat(part_param, " must be {\"type\": \"text\", \"text\": string}; ",
                                              "other content parts are not supported"));
    }
    texts.push_back(part["text"].get<std::string>());
  }
  return absl::StrJoin(texts, "\n");
}

absl::StatusOr<core::ChatPrompt> ReadMessages(const Fields& f) {
  const json* messages = f.Get("messages");
  if (messages == nullptr || !messages->is_array() || messages->empty()) {
    return Invalid("messages", "messages must be a non-empty list of {role, content} objects");
  }
  core::ChatPrompt chat;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Invalid(param, absl::StrCat(param, " must be an object"));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return Invalid(param + ".role", absl::StrCat(param, ".role must be a string"));
    }
    ADAPTERD_ASSIGN_OR_RETURN(content, MessageContent(m, i));
    chat.messages.push_back({role->get<std::string>(), std::move(content)});
  }
  ADAPTERD_ASSIGN_OR_RETURN(add_generation_prompt, f.Bool("add_generation_prompt"));
  chat.add_generation_prompt = add_generation_prompt.value_or(true);
  return chat;
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseCompletionRequest(std::string_view body, const OpenAiLimits& limits) {
  ADAPTERD_ASSIGN_OR_RETURN(j, ParseObject(body, limits.max_depth));
  const Fields f(j);
  OpenAiRequest out;
  out.kind = ApiKind::kCompletion;
  if (absl::Status st = RefuseUnsupported(f, out.kind); !st.ok()) return st;
  if (absl::Status st = ReadEnvelope(f, limits, out); !st.ok()) return st;
  core::GenerateRequest proto;
  if (absl::Status st = ReadSampling(f, proto); !st.ok()) return st;
  if (absl::Status st = ReadAdapters(f, proto); !st.ok()) return st;
  ADAPTERD_ASSIGN_OR_RETURN(max_tokens, f.Int("max_tokens", 1, kMaxInt));
  proto.engine.sampling.max_new_tokens = max_tokens.value_or(16);
  ADAPTERD_ASSIGN_OR_RETURN(add_special, f.Bool("add_special_tokens"));
  proto.add_special_tokens = add_special.value_or(true);
  if (const json* lp = f.Get("logprobs"); lp != nullptr) {
    if (!lp->is_number_integer() || lp->get<int64_t>() < 0) {
      return Invalid("logprobs", "logprobs must be a non-negative integer");
    }
    if (lp->get<int64_t>() > 0) {
      return Invalid("logprobs", "logprobs: only 0 is supported (the chosen tokens' logprobs, no top alternatives)");
    }
    out.logprobs = true;
  }
  ADAPTERD_ASSIGN_OR_RETURN(best_of, f.Int("best_of", 1, kMaxInt));
  if (best_of.has_value() && *best_of != out.n) return Invalid("best_of", "best_of other than n is not supported");
  proto.engine.sampling.return_logprobs = out.logprobs;
  if (absl::Status st = ReadPrompts(f.Get("prompt"), proto, out.prompts); !st.ok()) return st;
  if (absl::Status st = CheckChoices(out, limits); !st.ok()) return st;
  return out;
}

absl::StatusOr<OpenAiRequest> ParseChatRequest(std::string_view body, const OpenAiLimits& limits) {
  ADAPTERD_ASSIGN_OR_RETURN(j, ParseObject(body, limits.max_depth));
  const Fields f(j);
  OpenAiRequest out;
  out.kind = ApiKind::kChat;
  if (absl::Status st = RefuseUnsupported(f, out.kind); !st.ok()) return st;
  if (absl::Status st = ReadEnvelope(f, limits, out); !st.ok()) return st;
  core::GenerateRequest request;
  if (absl::Status st = ReadSampling(f, request); !st.ok()) return st;
  if (absl::Status st = ReadAdapters(f, request); !st.ok()) return st;
  ADAPTERD_ASSIGN_OR_RETURN(max_completion, f.Int("max_completion_tokens", 1, kMaxInt));
  ADAPTERD_ASSIGN_OR_RETURN(max_tokens, f.Int("max_tokens", 1, kMaxInt));
  if (max_completion.has_value() || max_tokens.has_value()) {
    request.engine.sampling.max_new_tokens = max_completion.has_value() ? *max_completion : *max_tokens;
  } else {
    request.max_new_tokens_to_context = true;
  }
  ADAPTERD_ASSIGN_OR_RETURN(logprobs, f.Bool("logprobs"));
  out.logprobs = logprobs.value_or(false);
  ADAPTERD_ASSIGN_OR_RETURN(top_logprobs, f.Int("top_logprobs", 0, 20));
  if (top_logprobs.value_or(0) > 0) {
    return Invalid("top_logprobs", "top_logprobs: only 0 is supported (no top alternatives)");
  }
  request.engine.sampling.return_logprobs = out.logprobs;
  ADAPTERD_ASSIGN_OR_RETURN(chat, ReadMessages(f));
  request.chat = std::move(chat);
  out.prompts.push_back(std::move(request));
  if (absl::Status st = CheckChoices(out, limits); !st.ok()) return st;
  return out;
}

absl::StatusOr<ClassifyApiRequest> ParseClassifyRequest(std::string_view body, const OpenAiLimits& limits) {
  ADAPTERD_ASSIGN_OR_RETURN(j, ParseObject(body, limits.max_depth));
  const Fields f(j);
  ClassifyApiRequest out;
  ADAPTERD_ASSIGN_OR_RETURN(model, f.String("model"));
  out.model = model.value_or("");
  if (f.Get("truncate_prompt_tokens") != nullptr) {
    return Invalid("truncate_prompt_tokens", "truncate_prompt_tokens is not supported");
  }
  core::ClassifyRequest proto;
  ADAPTERD_ASSIGN_OR_RETURN(add_special, f.Bool("add_special_tokens"));
  proto.add_special_tokens = add_special.value_or(true);
  // The same shapes as a completion's prompt, read through its reader.
  std::vector<core::GenerateRequest> prompts;
  if (absl::Status st = ReadPrompts(f.Get("input"), core::GenerateRequest(), prompts, "input"); !st.ok()) return st;
  if (static_cast<int64_t>(prompts.size()) > limits.max_choices) {
    return Invalid("input", absl::StrCat("input holds ", prompts.size(), " prompts; at most ", limits.max_choices,
                                         " are allowed"));
  }
  for (core::GenerateRequest& p : prompts) {
    core::ClassifyRequest r = proto;
    r.prompt_text = std::move(p.prompt_text);
    r.prompt_token_ids = std::move(p.engine.prompt);
    out.inputs.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<LoraLoadRequest> ParseLoadLoraRequest(std::string_view body) {
  ADAPTERD_ASSIGN_OR_RETURN(j, ParseObject(body, 16));
  const Fields f(j);
  ADAPTERD_ASSIGN_OR_RETURN(name, f.String("lora_name"));
  ADAPTERD_ASSIGN_OR_RETURN(path, f.String("lora_path"));
  if (!name.has_value() || name->empty() || !path.has_value() || path->empty()) {
    return Invalid(!name.has_value() || name->empty() ? "lora_name" : "lora_path",
                   "Both 'lora_name' and 'lora_path' must be provided.");
  }
  return LoraLoadRequest{*std::move(name), *std::move(path)};
}

absl::StatusOr<std::string> ParseUnloadLoraRequest(std::string_view body) {
  ADAPTERD_ASSIGN_OR_RETURN(j, ParseObject(body, 16));
  ADAPTERD_ASSIGN_OR_RETURN(name, Fields(j).String("lora_name"));
  if (!name.has_value() || name->empty()) return Invalid("lora_name", "'lora_name' needs to be provided to unload a LoRA adapter.");
  return *std::move(name);
}

}  // namespace adapterd::http
