// libFuzzer target: request validation. Arbitrary bytes are parsed as a
// GenerateRequest, translated as the RPC layer does, and validated against
// a Llama config and the request limits; the result must be a status.
#include <cstddef>
#include <cstdint>

#include "adapterd/v1/inference.pb.h"
#include "server/engine/engine.h"
#include "server/rpc/inference_service.h"

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
  adapterd::v1::GenerateRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto r = adapterd::rpc::TranslateGenerateRequest(req);
  if (!r.ok()) return 0;
  (void)adapterd::engine::ValidateRequest(r->engine, *config, options);
  return 0;
}
