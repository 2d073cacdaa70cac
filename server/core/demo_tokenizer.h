// The demo model's tokenizer: a byte-level BPE trained at first start on
// the project's documentation, with a chat template of its own.
#ifndef ADAPTERD_SERVER_CORE_DEMO_TOKENIZER_H_
#define ADAPTERD_SERVER_CORE_DEMO_TOKENIZER_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/core/demo_corpus.h"

namespace adapterd::core {

// The special tokens, with ids 0 to 4. A conversation renders as
//   <|begin_of_text|><|start_turn|>user\nHello<|end_turn|>\n<|start_turn|>assistant\n...
// and a reply ends with <|end_turn|>; plain text ends with <|end_of_text|>.
inline constexpr std::string_view kDemoPad = "<|pad|>";
inline constexpr std::string_view kDemoBos = "<|begin_of_text|>";
inline constexpr std::string_view kDemoEos = "<|end_of_text|>";
inline constexpr std::string_view kDemoStartTurn = "<|start_turn|>";
inline constexpr std::string_view kDemoEndTurn = "<|end_turn|>";
// The ids that end generation (generation_config.json): <|end_of_text|>
// and <|end_turn|>.
inline constexpr int64_t kDemoBosId = 1, kDemoEosId = 2, kDemoEndTurnId = 4;

// The demo's chat template (jinja2, written for adapterd).
std::string_view DemoChatTemplate();

struct DemoTokenizerFiles {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
};

// Trains the tokenizer on the prose of `documents` (ProseParagraphs), in
// order: `vocab_size` ids (the
// special tokens, the 256 bytes, then merges), a Split + ByteLevel
// pre-tokenizer, BOS added to encoded text (LlamaTokenizerFast,
// add_bos_token). Deterministic: the same documents give the same bytes.
absl::StatusOr<DemoTokenizerFiles> TrainDemoTokenizer(std::span<const DemoDocument> documents, int64_t vocab_size);

// Writes tokenizer.json and tokenizer_config.json into the existing `dir`.
absl::Status WriteDemoTokenizer(const std::string& dir, const DemoTokenizerFiles& files);

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_DEMO_TOKENIZER_H_
