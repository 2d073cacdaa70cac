// The OpenAI (and vLLM) request bodies as the core's requests: pure
// translation, exposed for tests and fuzzing.
#ifndef ADAPTERD_SERVER_HTTP_OPENAI_REQUEST_H_
#define ADAPTERD_SERVER_HTTP_OPENAI_REQUEST_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/classify_request.h"
#include "server/core/generate_request.h"

namespace adapterd::http {

enum class ApiKind { kCompletion, kChat };

// One POST /v1/completions or /v1/chat/completions, translated.
struct OpenAiRequest {
  ApiKind kind = ApiKind::kCompletion;
  std::string model;  // "" when the body names none
  // One core request per prompt, without id (completions may carry a batch
  // of prompts; a chat is one). Choice p * n + j is sample j of prompt p.
  std::vector<core::GenerateRequest> prompts;
  int n = 1;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool logprobs = false;          // the chosen tokens' logprobs
  bool return_token_ids = false;  // vLLM's extension: choices carry token_ids
};

struct OpenAiLimits {
  int max_choices = 64;  // n times the number of prompts
  int max_depth = 64;    // JSON nesting
};

// Parses and translates a request body. Errors are INVALID_ARGUMENT with the
// offending field as the status's param (see WithParam): a body that is not
// a JSON object, a field of the wrong type or out of range, and the
// features this server does not provide (echo, top-k alternatives in
// logprobs, penalties, logit_bias, suffix, best_of other than n, tools,
// non-text content parts, JSON response formats). Unknown fields are
// ignored. Prompt length, token ids and stop-string limits are checked
// later by the core. Besides OpenAI's fields, vLLM's sampling extensions
// are read: top_k, ignore_eos, stop_token_ids, skip_special_tokens,
// include_stop_str_in_output, add_special_tokens, add_generation_prompt
// and return_token_ids; and adapterd's `adapters` (composition: a list of
// {"id", "weight"}, into every core request's `adapters`).
absl::StatusOr<OpenAiRequest> ParseCompletionRequest(std::string_view body, const OpenAiLimits& limits);
absl::StatusOr<OpenAiRequest> ParseChatRequest(std::string_view body, const OpenAiLimits& limits);

// One POST /v1/classify (vLLM's classification API), translated: `input` is
// a string, a list of token ids, a list of strings or a list of lists of
// token ids, each one core request (without id).
struct ClassifyApiRequest {
  std::string model;  // "" when the body names none
  std::vector<core::ClassifyRequest> inputs;
};

// Parses and translates a /v1/classify body: `model`, `input` and vLLM's
// `add_special_tokens`. Errors are INVALID_ARGUMENT with the offending field
// as param; at most limits.max_choices inputs. `truncate_prompt_tokens` is
// refused (the prompt is never cut); other unknown fields are ignored.
absl::StatusOr<ClassifyApiRequest> ParseClassifyRequest(std::string_view body, const OpenAiLimits& limits);

// vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter bodies.
struct LoraLoadRequest {
  std::string name;
  std::string path;
};
absl::StatusOr<LoraLoadRequest> ParseLoadLoraRequest(std::string_view body);
// The lora_name to unload.
absl::StatusOr<std::string> ParseUnloadLoraRequest(std::string_view body);

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_OPENAI_REQUEST_H_
