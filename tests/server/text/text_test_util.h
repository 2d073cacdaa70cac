// Small tokenizer.json documents built in code for the text layer's tests.
#ifndef ADAPTERD_TESTS_SERVER_TEXT_TEXT_TEST_UTIL_H_
#define ADAPTERD_TESTS_SERVER_TEXT_TEXT_TEST_UTIL_H_

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/text/tokenizer.h"

namespace adapterd::text::testing {

using Json = nlohmann::json;

// A BPE model over `vocab` with `merges` (pairs).
inline Json BpeModel(Json vocab, Json merges = Json::array()) {
  return Json{{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
              {"ignore_merges", false}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}};
}

// A whole tokenizer.json around `model`.
inline Json TokenizerJson(Json model, Json normalizer = nullptr, Json pre_tokenizer = nullptr,
                          Json post_processor = nullptr, Json decoder = nullptr, Json added = Json::array()) {
  return Json{{"version", "1.0"},           {"truncation", nullptr},         {"padding", nullptr},
              {"added_tokens", std::move(added)}, {"normalizer", std::move(normalizer)},
              {"pre_tokenizer", std::move(pre_tokenizer)}, {"post_processor", std::move(post_processor)},
              {"decoder", std::move(decoder)}, {"model", std::move(model)}};
}

inline Json Added(int id, const std::string& content, bool special, Json extra = Json::object()) {
  Json t{{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
         {"normalized", !special}, {"special", special}};
  for (auto it = extra.begin(); it != extra.end(); ++it) t[it.key()] = it.value();
  return t;
}

// Loads `j`, failing the test when it does not load.
inline std::unique_ptr<Tokenizer> Load(const Json& j, const std::string& config = "") {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(j.dump(), config, "tokenizer.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

// Every character of `s` as its own vocabulary entry, ids from `first`.
inline Json CharVocab(const std::string& chars, int first = 0) {
  Json v = Json::object();
  int id = first;
  for (char c : chars) v[std::string(1, c)] = id++;
  return v;
}

}  // namespace adapterd::text::testing

#endif  // ADAPTERD_TESTS_SERVER_TEXT_TEXT_TEST_UTIL_H_
