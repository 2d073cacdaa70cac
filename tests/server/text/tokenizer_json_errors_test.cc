// tokenizer.json that adapterd cannot or must not load: every error is
// INVALID_ARGUMENT and names the file and the JSON path, and nothing crashes.
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/text/sentencepiece_model.h"
#include "server/text/tokenizer.h"
#include "tests/server/text/text_test_util.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"

namespace adapterd::text {
namespace {

using adapterd::testing::IsError;
using testing::BpeModel;
using testing::Json;
using testing::TokenizerJson;

Json Base() {
  return TokenizerJson(BpeModel(Json{{"a", 0}, {"b", 1}, {"ab", 2}}, Json::array({Json::array({"a", "b"})})));
}

struct Case {
  std::string name;
  std::function<void(Json&)> mutate;
  std::vector<std::string> expect;
};

absl::Status LoadStatus(const std::string& text) {
  return Tokenizer::FromJson(text, "", "tokenizer.json").status();
}

TEST(TokenizerJsonErrorsTest, BaseLoads) { EXPECT_TRUE(LoadStatus(Base().dump()).ok()); }

TEST(TokenizerJsonErrorsTest, EachMalformedFieldIsNamed) {
  const std::vector<Case> cases = {
      {"unknown pre-tokenizer in a sequence",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Sequence"},
                               {"pretokenizers", Json::array({{{"type", "Digits"}}, {{"type", "Bert"}}})}};
       },
       {"tokenizer.json: pre_tokenizer.pretokenizers[1].type \"Bert\" is not supported"}},
      {"unknown normalizer", [](Json& j) { j["normalizer"] = {{"type", "Precompiled"}}; },
       {"normalizer.type \"Precompiled\" is not supported"}},
      {"unknown decoder in a sequence",
       [](Json& j) { j["decoder"] = {{"type", "Sequence"}, {"decoders", Json::array({{{"type", "CTC"}}})}}; },
       {"decoder.decoders[0].type \"CTC\" is not supported"}},
      {"unknown post-processor", [](Json& j) { j["post_processor"] = {{"type", "Nope"}}; },
       {"post_processor.type \"Nope\" is not supported"}},
      {"WordPiece model", [](Json& j) { j["model"]["type"] = "WordPiece"; }, {"model.type \"WordPiece\""}},
      {"Unigram model", [](Json& j) { j["model"]["type"] = "Unigram"; }, {"model.type \"Unigram\""}},
      {"dropout", [](Json& j) { j["model"]["dropout"] = 0.1; }, {"model.dropout", "only null or 0"}},
      {"missing model", [](Json& j) { j.erase("model"); }, {"model is missing"}},
      {"model not an object", [](Json& j) { j["model"] = 3; }, {"model must be an object"}},
      {"vocab missing", [](Json& j) { j["model"].erase("vocab"); }, {"model.vocab is missing"}},
      {"vocab an array", [](Json& j) { j["model"]["vocab"] = Json::array(); }, {"model.vocab must be an object"}},
      {"negative id", [](Json& j) { j["model"]["vocab"]["a"] = -1; }, {"model.vocab.a must be an id"}},
      {"string id", [](Json& j) { j["model"]["vocab"]["a"] = "0"; }, {"model.vocab.a must be an id"}},
      {"merge of unknown token", [](Json& j) { j["model"]["merges"] = Json::array({Json::array({"a", "z"})}); },
       {"model.merges[0]", "\"z\" is not in the vocabulary"}},
      {"merge result unknown", [](Json& j) { j["model"]["merges"] = Json::array({Json::array({"b", "a"})}); },
       {"model.merges[0]", "merged token \"ba\""}},
      {"legacy merge with three parts", [](Json& j) { j["model"]["merges"] = Json::array({"a b c"}); },
       {"model.merges[0]", "two tokens"}},
      {"merge of wrong shape", [](Json& j) { j["model"]["merges"] = Json::array({Json::array({"a"})}); },
       {"model.merges[0] must be a pair"}},
      {"merges not a list", [](Json& j) { j["model"]["merges"] = "a b"; }, {"model.merges must be an array"}},
      {"byte_fallback not a bool", [](Json& j) { j["model"]["byte_fallback"] = "yes"; },
       {"model.byte_fallback must be a boolean"}},
      {"unk_token not a string", [](Json& j) { j["model"]["unk_token"] = 5; }, {"model.unk_token must be a string"}},
      {"split without pattern", [](Json& j) { j["pre_tokenizer"] = {{"type", "Split"}, {"behavior", "Isolated"}}; },
       {"pre_tokenizer.pattern is missing"}},
      {"split with bad regex",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}};
       },
       {"pre_tokenizer.pattern.Regex", "does not compile"}},
      {"split with bad behavior",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Sideways"}};
       },
       {"pre_tokenizer.behavior \"Sideways\" is not a split behavior"}},
      {"pattern of wrong shape",
       [](Json& j) { j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"Glob", "*"}}}, {"content", ""}}; },
       {"normalizer.pattern must be"}},
      {"metaspace scheme", [](Json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}, {"prepend_scheme", "sometimes"}}; },
       {"pre_tokenizer.prepend_scheme \"sometimes\""}},
      {"metaspace replacement", [](Json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "ab"}}; },
       {"pre_tokenizer.replacement must be exactly one character"}},
      {"strip decoder", [](Json& j) { j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", -1}, {"stop", 0}}; },
       {"decoder.start must be a non-negative integer"}},
      {"component without type", [](Json& j) { j["normalizer"] = Json::object(); }, {"normalizer.type is missing"}},
      {"component not an object", [](Json& j) { j["decoder"] = Json::array(); }, {"decoder must be an object"}},
      {"sequence without list", [](Json& j) { j["normalizer"] = {{"type", "Sequence"}}; },
       {"normalizer.normalizers is missing"}},
      {"template without special", [](Json& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"},
                                {"single", Json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}})},
                                {"special_tokens", Json::object()}};
       },
       {"post_processor.special_tokens has no entry for \"<s>\"", "post_processor.single[0]"}},
      {"template item", [](Json& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", Json::array({5})},
                                {"special_tokens", Json::object()}};
       },
       {"post_processor.single[0] must be"}},
      {"roberta pair", [](Json& j) { j["post_processor"] = {{"type", "RobertaProcessing"}, {"cls", "x"}}; },
       {"post_processor.cls must be a [token, id] pair"}},
      {"added tokens not a list", [](Json& j) { j["added_tokens"] = Json::object(); },
       {"added_tokens must be an array"}},
      {"added token without content", [](Json& j) { j["added_tokens"] = Json::array({{{"id", 3}}}); },
       {"added_tokens[0].content is missing"}},
      {"added token with bad id",
       [](Json& j) { j["added_tokens"] = Json::array({{{"id", "x"}, {"content", "<s>"}}}); },
       {"added_tokens[0].id must be an integer"}},
      {"added token empty", [](Json& j) { j["added_tokens"] = Json::array({{{"id", 3}, {"content", ""}}}); },
       {"added_tokens[0].content must not be empty"}},
      {"added token lstrip", [](Json& j) {
         j["added_tokens"] = Json::array({{{"id", 3}, {"content", "<s>"}, {"lstrip", 1}}});
       },
       {"added_tokens[0].lstrip must be a boolean"}},
  };
  for (const Case& c : cases) {
    Json j = Base();
    c.mutate(j);
    std::vector<std::string> expect = c.expect;
    expect.push_back("tokenizer.json");
    const absl::Status s = LoadStatus(j.dump());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << s;
    for (const std::string& e : expect) EXPECT_NE(s.message().find(e), std::string::npos) << c.name << ": " << s;
  }
}

TEST(TokenizerJsonErrorsTest, NotJsonOrNotAnObject) {
  EXPECT_TRUE(IsError(LoadStatus("{"), absl::StatusCode::kInvalidArgument, {"tokenizer.json", "not valid JSON"}));
  EXPECT_TRUE(IsError(LoadStatus("[]"), absl::StatusCode::kInvalidArgument, {"tokenizer.json", "not a JSON object"}));
  EXPECT_TRUE(IsError(LoadStatus(""), absl::StatusCode::kInvalidArgument, {"tokenizer.json"}));
  EXPECT_TRUE(IsError(LoadStatus(std::string("{\"model\": \"\xff\"}")), absl::StatusCode::kInvalidArgument,
                      {"tokenizer.json"}));
}

TEST(TokenizerJsonErrorsTest, TruncationsAndCorruptionsNeverCrash) {
  const std::string good = Base().dump();
  for (size_t n = 0; n < good.size(); ++n) {
    (void)LoadStatus(good.substr(0, n));
    std::string flipped = good;
    flipped[n] = static_cast<char>(flipped[n] ^ 0x20);
    (void)LoadStatus(flipped);
  }
}

TEST(TokenizerJsonErrorsTest, UnknownTokenMissingFromTheVocabularyFailsEncode) {
  Json j = Base();
  j["model"]["unk_token"] = "<unk>";
  auto t = testing::Load(j);
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(t->Encode("ab", false).ok());
  EXPECT_TRUE(IsError(t->Encode("abz", false).status(), absl::StatusCode::kInvalidArgument,
                      {"model.unk_token \"<unk>\" is not in the vocabulary"}));
}

TEST(TokenizerJsonErrorsTest, ConfigErrorsNameTheField) {
  const std::string j = Base().dump();
  EXPECT_TRUE(IsError(Tokenizer::FromJson(j, "{", "t").status(), absl::StatusCode::kInvalidArgument,
                      {"tokenizer_config.json", "not a valid JSON object"}));
  EXPECT_TRUE(IsError(Tokenizer::FromJson(j, R"({"add_bos_token": "yes"})", "t").status(),
                      absl::StatusCode::kInvalidArgument, {"tokenizer_config.json", "add_bos_token must be a boolean"}));
  EXPECT_TRUE(IsError(Tokenizer::FromJson(j, R"({"bos_token": 3})", "t").status(), absl::StatusCode::kInvalidArgument,
                      {"bos_token must be a string"}));
  EXPECT_TRUE(IsError(Tokenizer::FromJson(j, R"({"chat_template": [{"name": 1}]})", "t").status(),
                      absl::StatusCode::kInvalidArgument, {"chat_template[0]"}));
  EXPECT_TRUE(IsError(
      Tokenizer::FromJson(j, R"({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>"})", "t").status(),
      absl::StatusCode::kInvalidArgument, {"add_bos_token is true but bos_token \"<s>\" is not in the vocabulary"}));
}

TEST(TokenizerJsonErrorsTest, LoadNamesMissingFilesAndBadModels) {
  EXPECT_TRUE(IsError(Tokenizer::Load("/nonexistent-dir").status(), absl::StatusCode::kFailedPrecondition,
                      {"/nonexistent-dir", "neither tokenizer.json nor tokenizer.model"}));
  if (SentencePieceModel::Supported()) {
    EXPECT_TRUE(IsError(Tokenizer::FromSentencePiece("not a model", "", "tokenizer.model").status(),
                        absl::StatusCode::kInvalidArgument, {"tokenizer.model", "not a SentencePiece model"}));
  } else {
    EXPECT_TRUE(IsError(Tokenizer::FromSentencePiece("not a model", "", "tokenizer.model").status(),
                        absl::StatusCode::kFailedPrecondition, {"tokenizer.model", "sanitizer builds"}));
  }
}

}  // namespace
}  // namespace adapterd::text

namespace adapterd::text {
namespace {

TEST(TokenizerJsonErrorsTest, FuzzSeedCorpusLoads) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(adapterd::testing::SourceDir()) / "tests/fuzz/corpus/tokenizer_json_fuzz";
  int n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::ifstream in(entry.path());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(text, "", entry.path().string());
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE((*t)->Encode("Hello wörld 123, ab <s>!", true).ok()) << entry.path();
    ++n;
  }
  EXPECT_GE(n, 4);
}

}  // namespace
}  // namespace adapterd::text
