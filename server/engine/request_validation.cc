// ValidateRequest (declared in engine.h): the checks every request passes
// before it is queued.
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/engine/engine.h"

namespace adapterd::engine {
namespace {

int64_t VirtualTokens(const GenerationRequest& r) {
  return r.adapter != nullptr ? r.adapter->num_virtual_tokens() : 0;
}

absl::Status ValidatePromptTokens(const GenerationRequest& r, const model::ModelConfig& c, const EngineOptions& options) {
  if (r.prompt.empty()) return absl::InvalidArgumentError("prompt_token_ids must not be empty");
  if (options.max_prompt_tokens > 0 && static_cast<int64_t>(r.prompt.size()) > options.max_prompt_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_token_ids has ", r.prompt.size(),
                                                   " tokens; the limit (--max_prompt_tokens) is ",
                                                   options.max_prompt_tokens));
  }
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt_token_ids[", i, "] = ", r.prompt[i],
                                                     " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateContext(const GenerationRequest& r, const model::ModelConfig& c) {
  const int64_t total = VirtualTokens(r) + static_cast<int64_t>(r.prompt.size()) + MaxNewTokens(r);
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt_token_ids (", r.prompt.size(), ")",
        r.kind == RequestKind::kGenerate ? absl::StrCat(" plus sampling.max_new_tokens (", MaxNewTokens(r), ")")
                                         : std::string(),
        VirtualTokens(r) > 0 ? absl::StrCat(" plus the adapter's ", VirtualTokens(r), " virtual tokens")
                             : std::string(),
        " exceed the context length ", c.max_position_embeddings));
  }
  return absl::OkStatus();
}

absl::Status ValidateSamplingCounts(const SamplingParams& s, const EngineOptions& options) {
  if (s.max_new_tokens < 1) return absl::InvalidArgumentError("sampling.max_new_tokens must be at least 1");
  if (options.max_new_tokens > 0 && s.max_new_tokens > options.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.max_new_tokens = ", s.max_new_tokens,
                                                   " exceeds the limit (--max_new_tokens) of ",
                                                   options.max_new_tokens));
  }
  if (static_cast<int64_t>(s.stop_token_ids.size()) > options.max_stop_token_ids) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.stop_token_ids has ", s.stop_token_ids.size(),
                                                   " entries; the limit (--max_stop_token_ids) is ",
                                                   options.max_stop_token_ids));
  }
  return absl::OkStatus();
}

absl::Status ValidateSamplingValues(const SamplingParams& s, const model::ModelConfig& c) {
  if (!std::isfinite(s.temperature) || s.temperature < 0) {
    return absl::InvalidArgumentError("sampling.temperature must be finite and >= 0");
  }
  if (!std::isfinite(s.top_p) || s.top_p < 0 || s.top_p > 1) {
    return absl::InvalidArgumentError("sampling.top_p must be in [0, 1]");
  }
  if (s.top_k < 0) return absl::InvalidArgumentError("sampling.top_k must be >= 0");
  for (size_t i = 0; i < s.stop_token_ids.size(); ++i) {
    if (s.stop_token_ids[i] < 0 || s.stop_token_ids[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("sampling.stop_token_ids[", i, "] is outside the vocabulary"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRequest(const GenerationRequest& r, const model::ModelConfig& c, const EngineOptions& options) {
  const bool generate = r.kind == RequestKind::kGenerate;
  if (absl::Status s = ValidatePromptTokens(r, c, options); !s.ok()) return s;
  if (generate) {
    if (absl::Status s = ValidateSamplingCounts(r.sampling, options); !s.ok()) return s;
  }
  if (absl::Status s = ValidateContext(r, c); !s.ok()) return s;
  return generate ? ValidateSamplingValues(r.sampling, c) : absl::OkStatus();
}

}  // namespace adapterd::engine
