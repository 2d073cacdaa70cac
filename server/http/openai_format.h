// OpenAI's response objects and server-sent events for one request.
#ifndef ADAPTERD_SERVER_HTTP_OPENAI_FORMAT_H_
#define ADAPTERD_SERVER_HTTP_OPENAI_FORMAT_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "server/core/server_core.h"
#include "server/engine/request.h"
#include "server/http/openai_request.h"

namespace adapterd::http {

// What one choice produced since its previous event (streaming), or in all
// (a whole response).
struct ChoiceDelta {
  size_t index = 0;
  std::span<const int64_t> tokens;
  std::span<const float> logprobs;  // empty unless logprobs were asked for
  std::string_view text;
  // Set on the choice's last delta: "stop" or "length".
  std::optional<std::string_view> finish_reason;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// "stop" or "length".
std::string_view FinishReasonName(engine::FinishReason reason);

// Formats one request's output as OpenAI's objects: text_completion and
// chat.completion, their streamed chunks as SSE events ("data: {json}\n\n",
// then "data: [DONE]\n\n"), the usage chunk of stream_options.include_usage
// and error events. Fields come in OpenAI's order; the part of every chunk
// that never changes (id, object, created, model) is rendered once. Logprobs
// name each token by its own decoded text, and completions' text_offset
// counts characters from the start of the completion. Keeps each choice's
// running text offset, so one formatter serves one request, on one thread at
// a time. The core must outlive it.
class OpenAiFormatter {
 public:
  struct Head {
    ApiKind kind = ApiKind::kCompletion;
    std::string id;
    std::string model;
    int64_t created = 0;
    bool logprobs = false;
    bool token_ids = false;
    bool include_usage = false;
  };
  OpenAiFormatter(Head head, size_t choices, const core::ServerCore* core);

  // A chat stream's first event for a choice: the assistant role.
  void AppendRoleEvent(size_t index, std::string* out);
  void AppendChunkEvent(const ChoiceDelta& delta, std::string* out);
  // stream_options.include_usage: the usage, with no choices.
  void AppendUsageEvent(const Usage& usage, std::string* out);
  static void AppendDone(std::string* out);
  // An error in the middle of a stream, as OpenAI's client reads it.
  static void AppendErrorEvent(const absl::Status& status, std::string* out);

  // The whole response, each choice given as one delta that finishes it.
  std::string Whole(const std::vector<ChoiceDelta>& choices, const Usage& usage);

 private:
  void AppendChoice(const ChoiceDelta& d, bool stream, std::string* out);
  nlohmann::json Logprobs(const ChoiceDelta& d);
  static std::string UsageJson(const Usage& usage);

  const Head head_;
  const core::ServerCore* const core_;
  // `{"id":...,"object":...,"created":...,"model":...,"choices":[` of a
  // chunk, and of the whole response.
  const std::string chunk_prefix_;
  const std::string whole_prefix_;
  std::vector<int64_t> text_offsets_;  // per choice, in characters
};

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_OPENAI_FORMAT_H_
