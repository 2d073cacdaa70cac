// What a transport asks the core to classify, and how the core answers.
#ifndef ADAPTERD_SERVER_CORE_CLASSIFY_REQUEST_H_
#define ADAPTERD_SERVER_CORE_CLASSIFY_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace adapterd::core {

// A sequence-classification request: exactly one of `prompt_token_ids` and
// `prompt_text` (tokenized with the checkpoint's tokenizer, as Generate
// tokenizes it). A plain value.
struct ClassifyRequest {
  std::string id;  // for logs
  std::vector<int64_t> prompt_token_ids;
  std::optional<std::string> prompt_text;
  bool add_special_tokens = true;  // for prompt_text
  absl::Time deadline = absl::InfiniteFuture();
};

// One label's score.
struct LabelScore {
  std::string label;  // the adapter's id2label name, or its index
  float logit = 0;
  float probability = 0;  // softmax over the labels (sigmoid for multi-label adapters)
};

struct ClassifyResult {
  std::vector<LabelScore> scores;  // one per label, in label order
  int64_t prompt_tokens = 0;       // the caller's tokens
  // The token the head pooled: the last one that is not padding (as
  // transformers' *ForSequenceClassification pools), an index into the prompt.
  int64_t pooled_index = 0;
};

// Receives one Classify result, exactly once, on the engine thread; must not
// block.
class ClassifySink {
 public:
  virtual ~ClassifySink() = default;
  virtual void OnResult(absl::StatusOr<ClassifyResult> result) = 0;
};

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_CLASSIFY_REQUEST_H_
