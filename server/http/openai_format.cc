#include "server/http/openai_format.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/http/http_error.h"

namespace adapterd::http {
namespace {

using nlohmann::json;

int64_t CountCharacters(std::string_view s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
  return n;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

std::string_view FinishReasonName(engine::FinishReason reason) {
  return reason == engine::FinishReason::kLength ? "length" : "stop";
}

OpenAiFormatter::OpenAiFormatter(Head head, size_t choices, const core::ServerCore* core)
    : head_(std::move(head)), core_(core), text_offsets_(choices, 0) {}

json OpenAiFormatter::Envelope(bool chunk) const {
  const char* object = head_.kind == ApiKind::kChat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                    : "text_completion";
  return json{{"id", head_.id}, {"object", object}, {"created", head_.created}, {"model", head_.model}};
}

json OpenAiFormatter::UsageJson(const Usage& u) {
  return json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json OpenAiFormatter::Logprobs(const ChoiceDelta& d) {
  if (!head_.logprobs) return nullptr;
  const size_t n = std::min(d.tokens.size(), d.logprobs.size());
  std::vector<std::string> texts(n);
  for (size_t i = 0; i < n; ++i) {
    absl::StatusOr<std::string> t =
        core_->Detokenize({static_cast<int32_t>(d.tokens[i])}, /*skip_special_tokens=*/false);
    if (t.ok()) texts[i] = *std::move(t);
  }
  if (head_.kind == ApiKind::kChat) {
    json content = json::array();
    for (size_t i = 0; i < n; ++i) {
      json bytes = json::array();
      for (char c : texts[i]) bytes.push_back(static_cast<int>(static_cast<unsigned char>(c)));
      content.push_back(
          {{"token", texts[i]}, {"logprob", d.logprobs[i]}, {"bytes", std::move(bytes)}, {"top_logprobs", json::array()}});
    }
    return json{{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json tokens = json::array(), token_logprobs = json::array(), offsets = json::array();
  int64_t& offset = text_offsets_[d.index];
  for (size_t i = 0; i < n; ++i) {
    tokens.push_back(texts[i]);
    token_logprobs.push_back(d.logprobs[i]);
    offsets.push_back(offset);
    offset += CountCharacters(texts[i]);
  }
  return json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", nullptr},
              {"text_offset", std::move(offsets)}};
}

json OpenAiFormatter::Choice(const ChoiceDelta& d, bool stream) {
  json c = {{"index", d.index}};
  if (head_.kind == ApiKind::kChat) {
    if (!stream) {
      c["message"] = {{"role", "assistant"}, {"content", d.text}};
    } else if (!d.text.empty() || !d.tokens.empty()) {
      c["delta"] = {{"content", d.text}};
    } else {
      c["delta"] = json::object();
    }
  } else {
    c["text"] = d.text;
  }
  c["logprobs"] = Logprobs(d);
  c["finish_reason"] = d.finish_reason.has_value() ? json(*d.finish_reason) : json(nullptr);
  if (head_.token_ids) c["token_ids"] = std::vector<int64_t>(d.tokens.begin(), d.tokens.end());
  return c;
}

void OpenAiFormatter::AppendEvent(const json& j, std::string* out) { absl::StrAppend(out, "data: ", Dump(j), "\n\n"); }

void OpenAiFormatter::AppendRoleEvent(size_t index, std::string* out) {
  json e = Envelope(true);
  e["choices"] = json::array(
      {{{"index", index}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
  if (head_.include_usage) e["usage"] = nullptr;
  AppendEvent(e, out);
}

void OpenAiFormatter::AppendChunkEvent(const ChoiceDelta& delta, std::string* out) {
  json e = Envelope(true);
  e["choices"] = json::array({Choice(delta, /*stream=*/true)});
  if (head_.include_usage) e["usage"] = nullptr;
  AppendEvent(e, out);
}

void OpenAiFormatter::AppendUsageEvent(const Usage& usage, std::string* out) {
  json e = Envelope(true);
  e["choices"] = json::array();
  e["usage"] = UsageJson(usage);
  AppendEvent(e, out);
}

void OpenAiFormatter::AppendDone(std::string* out) { out->append("data: [DONE]\n\n"); }

void OpenAiFormatter::AppendErrorEvent(const absl::Status& status, std::string* out) {
  absl::StrAppend(out, "data: ",
                  ErrorJson(HttpStatusFor(status.code()),
                            std::string_view(status.message().data(), status.message().size()), ParamOf(status)),
                  "\n\n");
}

std::string OpenAiFormatter::Whole(const std::vector<ChoiceDelta>& choices, const Usage& usage) {
  json e = Envelope(false);
  json list = json::array();
  for (const ChoiceDelta& d : choices) list.push_back(Choice(d, /*stream=*/false));
  e["choices"] = std::move(list);
  e["usage"] = UsageJson(usage);
  return Dump(e);
}

}  // namespace adapterd::http
