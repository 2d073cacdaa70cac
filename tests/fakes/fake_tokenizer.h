// A character-level tokenizer written in code into a model directory, for
// tests of the text path that need no reference stack.
#ifndef ADAPTERD_TESTS_FAKES_FAKE_TOKENIZER_H_
#define ADAPTERD_TESTS_FAKES_FAKE_TOKENIZER_H_

#include <fstream>
#include <string>

#include "nlohmann/json.hpp"
#include "tests/server/text/text_test_util.h"

namespace adapterd::testing {

// The characters the tokenizer knows, ids 0.. in this order.
inline constexpr char kFakeTokenizerChars[] = " abcdefghijklmnopqrstuvwxyz:!.\n";

// A template of the project's own: a role line per message, and a cue.
inline constexpr char kFakeChatTemplate[] =
    "{%- for m in messages %}{%- if m.role not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + m.role) }}{%- endif %}"
    "{{ m.role + ': ' + m.content | trim + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ 'assistant:' }}{%- endif %}";

// Writes tokenizer.json (a BPE model with one token per character of
// kFakeTokenizerChars and a Fuse decoder) and tokenizer_config.json (with
// `chat_template`, when not empty) into `dir`.
inline void WriteFakeTokenizer(const std::string& dir, const std::string& chat_template) {
  namespace tt = text::testing;
  std::ofstream(dir + "/tokenizer.json")
      << tt::TokenizerJson(tt::BpeModel(tt::CharVocab(kFakeTokenizerChars)), nullptr, nullptr, nullptr,
                           {{"type", "Fuse"}})
             .dump();
  nlohmann::json config = nlohmann::json::object();
  if (!chat_template.empty()) config["chat_template"] = chat_template;
  std::ofstream(dir + "/tokenizer_config.json") << config.dump();
}

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_FAKES_FAKE_TOKENIZER_H_
