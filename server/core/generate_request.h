// What a transport asks the core to generate, and how the core answers.
#ifndef ADAPTERD_SERVER_CORE_GENERATE_REQUEST_H_
#define ADAPTERD_SERVER_CORE_GENERATE_REQUEST_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "server/engine/request.h"

namespace adapterd::core {

// One message of a conversation; `role` is whatever the chat template accepts.
struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatPrompt {
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = false;
};

// One adapter of a composed request and its weight (see
// GenerateRequest::adapters).
struct WeightedAdapter {
  std::string id;
  double weight = 1.0;
};

// A generation request as the core takes it. The prompt is exactly one of
// `engine.prompt` (token ids), `prompt_text` and `chat`; the core turns text
// and chats into token ids with the checkpoint's tokenizer and template.
struct GenerateRequest {
  // Id, sampling, deadline, and the prompt when given as token ids. Its
  // adapter is set by the core.
  engine::GenerationRequest engine;
  std::optional<std::string> prompt_text;
  std::optional<ChatPrompt> chat;
  bool add_special_tokens = true;   // for prompt_text
  bool skip_special_tokens = true;  // for the returned text
  std::vector<std::string> stop;    // stop strings
  bool include_stop_string = false;
  // Replaces engine.sampling.max_new_tokens with what the context length
  // leaves after the prompt, capped by the server's --max_new_tokens: for
  // APIs whose length limit is optional.
  bool max_new_tokens_to_context = false;
  // Composition: plain LoRA adapters whose weighted deltas the request's
  // rows add, at most ServerCoreOptions::max_adapters_per_request; empty
  // for a single adapter (or the base), named apart. Giving both is
  // INVALID_ARGUMENT.
  std::vector<WeightedAdapter> adapters;
};

// Output since the previous chunk: token ids (with logprobs when asked),
// and the text they make final. Text never ends inside a UTF-8 sequence and
// may lag the ids while it could still begin a stop string.
struct GenerateChunk {
  std::span<const int64_t> tokens;
  std::span<const float> logprobs;
  std::string_view text;
};

struct GenerateFinish {
  engine::Finish finish;
  // The stop string that ended generation (finish.reason is kStop), if one did.
  std::optional<std::string> stop_string;
};

// Receives one request's output from the core: OnChunk zero or more times,
// then OnFinish exactly once, all on the engine thread; they must not block.
class GenerateSink {
 public:
  virtual ~GenerateSink() = default;
  virtual void OnChunk(const GenerateChunk& chunk) = 0;
  virtual void OnFinish(const GenerateFinish& finish) = 0;
};

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_GENERATE_REQUEST_H_
