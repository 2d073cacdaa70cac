// The `post_processor` of tokenizer.json, for single sequences:
// TemplateProcessing, ByteLevel (no change to ids), RobertaProcessing,
// BertProcessing and Sequence.
#ifndef ADAPTERD_SERVER_TEXT_POST_PROCESSOR_H_
#define ADAPTERD_SERVER_TEXT_POST_PROCESSOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/json_fields.h"

namespace adapterd::text {

// Adds special tokens around an encoded sequence. A PostProcessor is
// immutable once built and thread-safe.
class PostProcessor {
 public:
  // Parses the post-processor at `path`; a JSON null adds nothing.
  static absl::StatusOr<std::unique_ptr<PostProcessor>> FromJson(const Json& j, const std::string& path);
  // `prefix` ids, the sequence, then `suffix` ids.
  static std::unique_ptr<PostProcessor> Wrap(std::vector<int32_t> prefix, std::vector<int32_t> suffix);

  // The ids with the special tokens added.
  std::vector<int32_t> Apply(std::vector<int32_t> ids) const;

 private:
  // One template, in order; kSequence marks where the ids go.
  static constexpr int32_t kSequence = -1;
  static absl::Status Parse(const Json& j, const std::string& path, std::vector<std::vector<int32_t>>* templates);
  static absl::StatusOr<std::vector<int32_t>> ParseTemplate(const Json& j, const std::string& path);
  static absl::StatusOr<int32_t> ParseTokenPair(const Json& j, const char* key, const std::string& path);

  std::vector<std::vector<int32_t>> templates_;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_POST_PROCESSOR_H_
