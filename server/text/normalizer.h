// The `normalizer` of tokenizer.json: Unicode normal forms, Lowercase,
// Strip, StripAccents, Prepend, Replace and Sequence.
#ifndef ADAPTERD_SERVER_TEXT_NORMALIZER_H_
#define ADAPTERD_SERVER_TEXT_NORMALIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/text/json_fields.h"
#include "server/text/split_pattern.h"
#include "server/text/unicode_util.h"

namespace adapterd::text {

// A chain of normalization steps (a Sequence is flattened into it). A
// Normalizer is immutable once built and thread-safe.
class Normalizer {
 public:
  // Parses the normalizer object at `path`; a JSON null is the identity.
  // Unknown types and malformed fields are INVALID_ARGUMENT naming the path.
  static absl::StatusOr<std::unique_ptr<Normalizer>> FromJson(const Json& j, const std::string& path);

  bool empty() const { return steps_.empty(); }
  // Normalizes well-formed UTF-8 `s` in place.
  absl::Status Apply(std::string* s) const;

 private:
  enum class Kind { kNormalForm, kLowercase, kStrip, kStripAccents, kPrepend, kReplace };
  struct Step {
    Kind kind;
    NormalForm form = NormalForm::kNfc;
    bool left = false, right = false;  // Strip
    std::string text;                  // Prepend: the prefix; Replace: the content
    std::unique_ptr<SplitPattern> pattern;
  };
  static absl::Status Parse(const Json& j, const std::string& path, std::vector<Step>* steps);

  std::vector<Step> steps_;
};

}  // namespace adapterd::text

#endif  // ADAPTERD_SERVER_TEXT_NORMALIZER_H_
