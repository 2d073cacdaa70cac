// libFuzzer target: OpenAI request translation. Arbitrary bytes are parsed as
// the bodies of /v1/completions, /v1/chat/completions, /v1/classify and
// vLLM's LoRA endpoints, as the HTTP layer does; every translated prompt given as token
// ids is validated against a Llama config and the request limits, and every
// error becomes an OpenAI error body. The result must be a status.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "server/engine/engine.h"
#include "server/http/http_error.h"
#include "server/http/openai_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const adapterd::model::ModelConfig* config = [] {
    auto* c = new adapterd::model::ModelConfig();
    c->vocab_size = 2048;
    c->max_position_embeddings = 2048;
    return c;
  }();
  adapterd::engine::EngineOptions options;
  options.max_prompt_tokens = 1024;
  options.max_new_tokens = 512;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const adapterd::http::OpenAiLimits limits;
  for (auto parse : {adapterd::http::ParseCompletionRequest, adapterd::http::ParseChatRequest}) {
    absl::StatusOr<adapterd::http::OpenAiRequest> r = parse(body, limits);
    if (!r.ok()) {
      (void)adapterd::http::ErrorResponse(r.status());
      continue;
    }
    for (const adapterd::core::GenerateRequest& g : r->prompts) {
      if (!g.engine.prompt.empty()) (void)adapterd::engine::ValidateRequest(g.engine, *config, options);
    }
  }
  absl::StatusOr<adapterd::http::ClassifyApiRequest> c = adapterd::http::ParseClassifyRequest(body, limits);
  if (c.ok()) {
    for (const adapterd::core::ClassifyRequest& in : c->inputs) {
      if (in.prompt_token_ids.empty()) continue;
      adapterd::engine::GenerationRequest g;
      g.kind = adapterd::engine::RequestKind::kClassify;
      g.prompt = in.prompt_token_ids;
      (void)adapterd::engine::ValidateRequest(g, *config, options);
    }
  } else {
    (void)adapterd::http::ErrorResponse(c.status());
  }
  (void)adapterd::http::ParseLoadLoraRequest(body);
  (void)adapterd::http::ParseUnloadLoraRequest(body);
  return 0;
}
