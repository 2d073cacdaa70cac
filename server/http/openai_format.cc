#include "server/http/openai_format.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

// `text` as a JSON string, quoted and escaped (invalid UTF-8 replaced).
std::string Quote(std::string_view text) { return Dump(json(text)); }

std::string Prefix(const OpenAiFormatter::Head& h, bool chunk) {
  const char* object = h.kind == ApiKind::kChat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                : "text_completion";
  return absl::StrCat("{\"id\":", Quote(h.id), ",\"object\":\"", object, "\",\"created\":", h.created,
                      ",\"model\":", Quote(h.model), ",\"choices\":[");
}

}  // namespace

std::string_view FinishReasonName(engine::FinishReason reason) {
  return reason == engine::FinishReason::kLength ? "length" : "stop";
}

OpenAiFormatter::OpenAiFormatter(Head head, size_t choices, const core::ServerCore* core)
    : head_(std::move(head)),
      core_(core),
      chunk_prefix_(Prefix(head_, true)),
      whole_prefix_(Prefix(head_, false)),
      text_offsets_(choices, 0) {}

std::string OpenAiFormatter::UsageJson(const Usage& u) {
  return absl::StrCat("{\"prompt_tokens\":", u.prompt_tokens, ",\"completion_tokens\":", u.completion_tokens,
                      ",\"total_tokens\":", u.prompt_tokens + u.completion_tokens, "}");
}

json OpenAiFormatter::Logprobs(const ChoiceDelta& d) {
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

void OpenAiFormatter::AppendChoice(const ChoiceDelta& d, bool stream, std::string* out) {
  absl::StrAppend(out, "{\"index\":", d.index, ",");
  if (head_.kind == ApiKind::kChat) {
    if (!stream) {
      absl::StrAppend(out, "\"message\":{\"role\":\"assistant\",\"content\":", Quote(d.text), "},");
    } else if (!d.text.empty() || !d.tokens.empty()) {
      absl::StrAppend(out, "\"delta\":{\"content\":", Quote(d.text), "},");
    } else {
      out->append("\"delta\":{},");
    }
  } else {
    absl::StrAppend(out, "\"text\":", Quote(d.text), ",");
  }
  absl::StrAppend(out, "\"logprobs\":", head_.logprobs ? Dump(Logprobs(d)) : "null", ",\"finish_reason\":",
                  d.finish_reason.has_value() ? absl::StrCat("\"", std::string(*d.finish_reason), "\"") : "null");
  if (head_.token_ids) absl::StrAppend(out, ",\"token_ids\":[", absl::StrJoin(d.tokens, ","), "]");
  out->append("}");
}

void OpenAiFormatter::AppendRoleEvent(size_t index, std::string* out) {
  absl::StrAppend(out, "data: ", chunk_prefix_, "{\"index\":", index,
                  ",\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]",
                  head_.include_usage ? ",\"usage\":null" : "", "}\n\n");
}

void OpenAiFormatter::AppendChunkEvent(const ChoiceDelta& delta, std::string* out) {
  absl::StrAppend(out, "data: ", chunk_prefix_);
  AppendChoice(delta, /*stream=*/true, out);
  absl::StrAppend(out, "]", head_.include_usage ? ",\"usage\":null" : "", "}\n\n");
}

void OpenAiFormatter::AppendUsageEvent(const Usage& usage, std::string* out) {
  absl::StrAppend(out, "data: ", chunk_prefix_, "],\"usage\":", UsageJson(usage), "}\n\n");
}

void OpenAiFormatter::AppendDone(std::string* out) { out->append("data: [DONE]\n\n"); }

void OpenAiFormatter::AppendErrorEvent(const absl::Status& status, std::string* out) {
  absl::StrAppend(out, "data: ",
                  ErrorJson(HttpStatusFor(status.code()),
                            std::string_view(status.message().data(), status.message().size()), ParamOf(status)),
                  "\n\n");
}

std::string OpenAiFormatter::Whole(const std::vector<ChoiceDelta>& choices, const Usage& usage) {
  std::string out = whole_prefix_;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i > 0) out.append(",");
    AppendChoice(choices[i], /*stream=*/false, &out);
  }
  absl::StrAppend(&out, "],\"usage\":", UsageJson(usage), "}");
  return out;
}

}  // namespace adapterd::http
