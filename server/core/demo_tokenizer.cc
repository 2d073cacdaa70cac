#include "server/core/demo_tokenizer.h"

#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/text/bpe_trainer.h"

namespace adapterd::core {
namespace {

// Words with their leading space, numbers in groups of up to three digits,
// runs of punctuation, and whitespace (a run before a word leaves the word
// its space).
constexpr char kSplitPattern[] = R"('(?:s|t|re|ve|m|ll|d)| ?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Each message becomes one turn: <|start_turn|>, the role, a newline, the
// trimmed content and <|end_turn|> with a newline; a generation prompt opens
// the assistant's turn. Roles other than system, user and assistant are
// refused.
constexpr char kChatTemplate[] =
    "{{- bos_token -}}\n"
    "{%- for message in messages -%}\n"
    "  {%- if message.role not in ['system', 'user', 'assistant'] -%}\n"
    "    {{- raise_exception('the demo model knows the roles system, user and assistant, not ' ~ message.role) -}}\n"
    "  {%- endif -%}\n"
    "  {{- '<|start_turn|>' ~ message.role ~ '\\n' ~ (message.content | trim) ~ '<|end_turn|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|start_turn|>assistant\\n' -}}\n"
    "{%- endif -%}\n";

std::vector<std::string> SpecialTokens() {
  return {std::string(kDemoPad), std::string(kDemoBos), std::string(kDemoEos), std::string(kDemoStartTurn),
          std::string(kDemoEndTurn)};
}

std::string TokenizerConfig() {
  nlohmann::ordered_json added = nlohmann::ordered_json::object();
  const std::vector<std::string> specials = SpecialTokens();
  for (size_t i = 0; i < specials.size(); ++i) {
    added[std::to_string(i)] = {{"content", specials[i]}, {"lstrip", false}, {"normalized", false},
                                {"rstrip", false},        {"single_word", false}, {"special", true}};
  }
  nlohmann::ordered_json j = {{"tokenizer_class", "LlamaTokenizerFast"},
                              {"bos_token", std::string(kDemoBos)},
                              {"eos_token", std::string(kDemoEos)},
                              {"pad_token", std::string(kDemoPad)},
                              {"unk_token", nullptr},
                              {"add_bos_token", true},
                              {"add_eos_token", false},
                              {"clean_up_tokenization_spaces", false},
                              {"legacy", false},
                              {"model_max_length", 2048},
                              {"added_tokens_decoder", std::move(added)},
                              {"chat_template", kChatTemplate}};
  return j.dump(2, ' ', /*ensure_ascii=*/false) + "\n";
}

}  // namespace

std::string_view DemoChatTemplate() { return kChatTemplate; }

absl::StatusOr<DemoTokenizerFiles> TrainDemoTokenizer(std::span<const DemoDocument> documents, int64_t vocab_size) {
  text::BpeTrainerOptions o;
  o.vocab_size = vocab_size;
  o.special_tokens = SpecialTokens();
  o.split_pattern = kSplitPattern;
  o.bos_token = std::string(kDemoBos);
  absl::StatusOr<std::unique_ptr<text::BpeTrainer>> trainer = text::BpeTrainer::Create(std::move(o));
  if (!trainer.ok()) return trainer.status();
  for (const DemoDocument& d : documents) {
    for (const std::string& paragraph : ProseParagraphs(d.text)) {
      if (absl::Status st = (*trainer)->Feed(paragraph); !st.ok()) {
        return absl::Status(st.code(), absl::StrCat(std::string(d.path), ": ", st.message()));
      }
    }
  }
  absl::StatusOr<text::BpeVocabulary> vocab = (*trainer)->Train();
  if (!vocab.ok()) return vocab.status();
  return DemoTokenizerFiles{(*trainer)->TokenizerJson(*vocab), TokenizerConfig()};
}

absl::Status WriteDemoTokenizer(const std::string& dir, const DemoTokenizerFiles& files) {
  const std::filesystem::path d(dir);
  if (absl::Status st = WriteStringToFile((d / "tokenizer.json").string(), files.tokenizer_json); !st.ok()) return st;
  return WriteStringToFile((d / "tokenizer_config.json").string(), files.tokenizer_config_json);
}

}  // namespace adapterd::core
