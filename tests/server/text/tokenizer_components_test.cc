// The pieces of a tokenizer.json pipeline, each on small hand-made inputs
// whose expected output follows from tokenizers' documented behaviour.
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/text/decoder.h"
#include "server/text/normalizer.h"
#include "server/text/pre_tokenizer.h"
#include "server/text/tokenizer.h"
#include "tests/server/text/text_test_util.h"
#include "tests/support/status_assertions.h"
#include "tests/support/test_env.h"

namespace adapterd::text {
namespace {

using adapterd::testing::IsError;
using testing::Added;
using testing::BpeModel;
using testing::CharVocab;
using testing::Json;
using testing::Load;
using testing::TokenizerJson;
using Ids = std::vector<int32_t>;

Ids Enc(const Tokenizer& t, const std::string& text, bool special = false) {
  absl::StatusOr<Ids> ids = t.Encode(text, special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : Ids{};
}

std::string Norm(const Json& j, std::string s) {
  absl::StatusOr<std::unique_ptr<Normalizer>> n = Normalizer::FromJson(j, "normalizer");
  EXPECT_TRUE(n.ok()) << n.status();
  if (!n.ok()) return "";
  EXPECT_TRUE((*n)->Apply(&s).ok());
  return s;
}

std::vector<std::string> PreTok(const Json& j, const std::string& s, bool at_start = true) {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> p = PreTokenizer::FromJson(j, "pre_tokenizer");
  EXPECT_TRUE(p.ok()) << p.status();
  std::vector<Piece> pieces = {{s, at_start}};
  if (p.ok()) EXPECT_TRUE((*p)->Apply(&pieces).ok());
  std::vector<std::string> out;
  for (const Piece& piece : pieces) out.push_back(piece.text);
  return out;
}

// Decodes `tokens` whole, and checks that streaming them gives the same.
std::string Dec(const Json& j, const std::vector<std::string>& tokens) {
  absl::StatusOr<std::unique_ptr<Decoder>> d = Decoder::FromJson(j, "decoder");
  EXPECT_TRUE(d.ok()) << d.status();
  if (!d.ok()) return "";
  std::vector<std::string_view> views(tokens.begin(), tokens.end());
  const std::string whole = (*d)->Decode(views);
  Decoder::Stream stream(**d);
  std::string streamed;
  for (const std::string& t : tokens) stream.Push(t, &streamed);
  stream.Finish(&streamed);
  EXPECT_EQ(streamed, whole);
  return whole;
}

TEST(BpeModelTest, MergesByRankInPairAndLegacyForm) {
  Json vocab{{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}};
  for (Json merges : {Json::array({Json::array({"b", "c"}), Json::array({"a", "b"}), Json::array({"a", "bc"})}),
                      Json::array({"#version: 0.2", "b c", "a b", "a bc"})}) {
    auto t = Load(TokenizerJson(BpeModel(vocab, merges)));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(Enc(*t, "abc"), (Ids{5}));
    EXPECT_EQ(Enc(*t, "abab"), (Ids{3, 3}));
    EXPECT_EQ(Enc(*t, "cab"), (Ids{2, 3}));
  }
}

TEST(BpeModelTest, UnknownCharactersFusedOrNotOrDropped) {
  Json model = BpeModel(Json{{"a", 0}, {"<unk>", 1}});
  model["unk_token"] = "<unk>";
  EXPECT_EQ(Enc(*Load(TokenizerJson(model)), "axxa"), (Ids{0, 1, 1, 0}));
  model["fuse_unk"] = true;
  EXPECT_EQ(Enc(*Load(TokenizerJson(model)), "axxa"), (Ids{0, 1, 0}));
  model["unk_token"] = nullptr;
  EXPECT_EQ(Enc(*Load(TokenizerJson(model)), "axxa"), (Ids{0, 0}));
}

TEST(BpeModelTest, ByteFallbackNeedsEveryByte) {
  Json model = BpeModel(Json{{"a", 0}, {"<unk>", 1}, {"<0xC3>", 2}, {"<0xA9>", 3}, {"<0xE2>", 4}});
  model["unk_token"] = "<unk>";
  model["byte_fallback"] = true;
  auto t = Load(TokenizerJson(model));
  EXPECT_EQ(Enc(*t, "a\xC3\xA9"), (Ids{0, 2, 3}));
  EXPECT_EQ(Enc(*t, "\xE2\x82\xAC"), (Ids{1}));  // <0x82> and <0xAC> are missing
}

TEST(BpeModelTest, SubwordPrefixAndWordSuffix) {
  Json model = BpeModel(Json{{"a", 0}, {"##b", 1}, {"ab", 2}, {"b", 3}}, Json::array({Json::array({"a", "##b"})}));
  model["continuing_subword_prefix"] = "##";
  EXPECT_EQ(Enc(*Load(TokenizerJson(model)), "ab"), (Ids{2}));
  Json suffix = BpeModel(Json{{"a", 0}, {"b</w>", 1}, {"ab</w>", 2}}, Json::array({Json::array({"a", "b</w>"})}));
  suffix["end_of_word_suffix"] = "</w>";
  EXPECT_EQ(Enc(*Load(TokenizerJson(suffix)), "ab"), (Ids{2}));
}

TEST(BpeModelTest, IgnoreMergesTakesWholePiecesFromTheVocabulary) {
  Json model = BpeModel(Json{{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}}, Json::array({Json::array({"a", "b"})}));
  EXPECT_EQ(Enc(*Load(TokenizerJson(model)), "abc"), (Ids{3, 2}));
  model["ignore_merges"] = true;
  EXPECT_EQ(Enc(*Load(TokenizerJson(model)), "abc"), (Ids{4}));
}

TEST(NormalizerTest, Forms) {
  EXPECT_EQ(Norm({{"type", "NFC"}}, "e\xCC\x81"), "\xC3\xA9");
  EXPECT_EQ(Norm({{"type", "NFD"}}, "\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(Norm({{"type", "NFKC"}}, "\xEF\xAC\x81\xE2\x91\xA0"), "fi1");  // ligature fi, circled 1
  EXPECT_EQ(Norm({{"type", "NFKD"}}, "\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(Norm({{"type", "Lowercase"}}, "AbC\xC3\x89\xC4\xB0"), "abc\xC3\xA9i\xCC\x87");
  EXPECT_EQ(Norm({{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}}, " \t a b \n"), "a b \n");
  EXPECT_EQ(Norm({{"type", "Strip"}}, "\xE3\x80\x80 a b \n"), "a b");
  EXPECT_EQ(Norm({{"type", "StripAccents"}}, "e\xCC\x81"), "e");
  EXPECT_EQ(Norm({{"type", "Prepend"}, {"prepend", "_"}}, "ab"), "_ab");
  EXPECT_EQ(Norm({{"type", "Prepend"}, {"prepend", "_"}}, ""), "");
  EXPECT_EQ(Norm({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "_"}}, "a b  c"), "a_b__c");
  EXPECT_EQ(Norm({{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}}, "a \t b\n\nc"), "a b c");
  EXPECT_EQ(Norm({{"type", "Sequence"}, {"normalizers", Json::array({{{"type", "Lowercase"}},
                                                                      {{"type", "Prepend"}, {"prepend", "x"}}})}},
                 "AB"),
            "xab");
}

TEST(PreTokenizerTest, SplitBehaviours) {
  auto split = [](const char* behavior, bool invert = false) {
    return PreTok({{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}},
                  "a-b--c");
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Removed"), (V{"a", "b", "c"}));
  EXPECT_EQ(split("Isolated"), (V{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(split("MergedWithPrevious"), (V{"a-", "b-", "-", "c"}));
  EXPECT_EQ(split("MergedWithNext"), (V{"a", "-b", "-", "-c"}));
  EXPECT_EQ(split("Contiguous"), (V{"a", "-", "b", "--", "c"}));
  EXPECT_EQ(split("Removed", true), (V{"-", "-", "-"}));
  EXPECT_EQ(PreTok({{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}+"}}}, {"behavior", "Isolated"}}, "ab12c3"),
            (V{"ab", "12", "c", "3"}));
}

TEST(PreTokenizerTest, CharacterClassSplits) {
  using V = std::vector<std::string>;
  EXPECT_EQ(PreTok({{"type", "Digits"}, {"individual_digits", true}}, "ab123c"), (V{"ab", "1", "2", "3", "c"}));
  EXPECT_EQ(PreTok({{"type", "Digits"}, {"individual_digits", false}}, "ab123c"), (V{"ab", "123", "c"}));
  EXPECT_EQ(PreTok({{"type", "Whitespace"}}, "Hello, world!"), (V{"Hello", ",", "world", "!"}));
  EXPECT_EQ(PreTok({{"type", "WhitespaceSplit"}}, "a  b\tc\xE3\x80\x80" "d"), (V{"a", "b", "c", "d"}));
  EXPECT_EQ(PreTok({{"type", "Punctuation"}}, "a,b"), (V{"a", ",", "b"}));
  EXPECT_EQ(PreTok({{"type", "CharDelimiterSplit"}, {"delimiter", "x"}}, "axbxxc"), (V{"a", "b", "c"}));
  EXPECT_EQ(PreTok({{"type", "BertPreTokenizer"}}, "a, b"), (V{"a", ",", "b"}));
}

TEST(PreTokenizerTest, Metaspace) {
  using V = std::vector<std::string>;
  const std::string m = "\xE2\x96\x81";
  EXPECT_EQ(PreTok({{"type", "Metaspace"}, {"prepend_scheme", "always"}, {"split", true}}, "a b"),
            (V{m + "a", m + "b"}));
  EXPECT_EQ(PreTok({{"type", "Metaspace"}, {"prepend_scheme", "always"}, {"split", false}}, "a b"), (V{m + "a" + m + "b"}));
  EXPECT_EQ(PreTok({{"type", "Metaspace"}, {"prepend_scheme", "first"}, {"split", false}}, "a", true), (V{m + "a"}));
  EXPECT_EQ(PreTok({{"type", "Metaspace"}, {"prepend_scheme", "first"}, {"split", false}}, "a", false), (V{"a"}));
  EXPECT_EQ(PreTok({{"type", "Metaspace"}, {"prepend_scheme", "never"}}, "a b"), (V{"a", m + "b"}));
  EXPECT_EQ(PreTok({{"type", "Metaspace"}, {"add_prefix_space", false}}, "a"), (V{"a"}));
}

TEST(PreTokenizerTest, ByteLevel) {
  using V = std::vector<std::string>;
  EXPECT_EQ(PreTok({{"type", "ByteLevel"}, {"add_prefix_space", true}}, "hi there"),
            (V{"\xC4\xA0hi", "\xC4\xA0there"}));
  EXPECT_EQ(PreTok({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}, "a b\n"),
            (V{"a\xC4\xA0" "b\xC4\x8A"}));
  EXPECT_EQ(PreTok({{"type", "ByteLevel"}, {"add_prefix_space", false}}, "I'm  42"),
            (V{"I", "'m", "\xC4\xA0", "\xC4\xA0" "42"}));
}

// tokenizers prepends the space to every piece between added tokens.
TEST(PreTokenizerTest, ByteLevelPrefixSpaceAfterAddedTokens) {
  Json vocab = Json::object();
  const auto& alphabet = ByteLevelAlphabet();
  for (int b = 0; b < 256; ++b) vocab[alphabet[b]] = b;
  auto t = Load(TokenizerJson(BpeModel(vocab), nullptr, Json{{"type", "ByteLevel"}, {"add_prefix_space", true}},
                              nullptr, Json{{"type", "ByteLevel"}}, Json::array({Added(256, "<s>", true)})));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(Enc(*t, "a<s>b c"), (Ids{' ', 'a', 256, ' ', 'b', ' ', 'c'}));
  EXPECT_EQ(t->Decode(Enc(*t, "a<s>b c"), false), " a<s> b c");
}

TEST(DecoderTest, Steps) {
  const std::string m = "\xE2\x96\x81";
  EXPECT_EQ(Dec({{"type", "Metaspace"}, {"prepend_scheme", "always"}}, {m + "a" + m + "b", m + "c", m + m + "d"}),
            "ab c  d");
  EXPECT_EQ(Dec({{"type", "Metaspace"}, {"prepend_scheme", "never"}}, {m + "a" + m + "b", m + "c"}), " a b c");
  EXPECT_EQ(Dec({{"type", "Metaspace"}}, {"", m + "c"}), " c");
  EXPECT_EQ(Dec({{"type", "ByteFallback"}},
                {"<0xC3>", "<0xA9>", "<0x80>", "x", "<0xE2>", "<0x82>", "<0xAC>", "<0x0a>", "<0x+1>", "<0xC3>"}),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDx\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
            "\xEF\xBF\xBD");
  EXPECT_EQ(Dec({{"type", "ByteFallback"}}, {"<0xE2>", "<0x82>", "<0xAC>", "a"}), "\xE2\x82\xAC" "a");
  EXPECT_EQ(Dec({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 1}}, {" x ", "  y  ", "z", "   ", " "}),
            "x y z ");
  EXPECT_EQ(Dec({{"type", "Strip"}, {"content", " "}, {"start", 2}, {"stop", 0}}, {"  ", " ab"}), "ab");
  EXPECT_EQ(Dec({{"type", "ByteLevel"}}, {"\xC3\x83", "\xC2\xA9", "\xC4\xA0", "a b", "\xC3\xA9"}),
            "\xC3\xA9 a b\xEF\xBF\xBD");
  EXPECT_EQ(Dec({{"type", "Replace"}, {"pattern", {{"String", "ab"}}}, {"content", "X"}}, {"a", "b", "ab"}), "abX");
  EXPECT_EQ(Dec(nullptr, {"a", "b", "c"}), "a b c");
  const Json llama = {{"type", "Sequence"},
                      {"decoders", Json::array({{{"type", "Replace"}, {"pattern", {{"String", m}}}, {"content", " "}},
                                                {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                                {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
  EXPECT_EQ(Dec(llama, {"<0x20>", m + "a"}), " a");
  EXPECT_EQ(Dec(llama, {m + "Hello", m + "world", "<0xE2>", "<0x82>", "<0xAC>"}), "Hello world\xE2\x82\xAC");
  EXPECT_EQ(Dec(llama, {}), "");
  const Json fused_strip = {{"type", "Sequence"}, {"decoders", Json::array({{{"type", "Fuse"}},
      {{"type", "Strip"}, {"content", "x"}, {"start", 1}, {"stop", 2}}})}};
  EXPECT_EQ(Dec(fused_strip, {"xa", "xx", "bxx", "x"}), "axxbx");
}

TEST(AddedTokensTest, SplitFirstLongestMatchWithStripAndSingleWord) {
  Json vocab = CharVocab("abhit ");
  Json added = Json::array({Added(10, "<s>", true), Added(11, "<m>", true, {{"lstrip", true}, {"rstrip", true}}),
                            Added(12, "hi", false, {{"single_word", true}}), Added(13, "<s><s>", true)});
  auto t = Load(TokenizerJson(BpeModel(vocab), nullptr, nullptr, nullptr, nullptr, added));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(Enc(*t, "a<s>b"), (Ids{0, 10, 1}));
  EXPECT_EQ(Enc(*t, "<s><s>"), (Ids{13}));
  EXPECT_EQ(Enc(*t, "a  <m>  b"), (Ids{0, 11, 1}));
  EXPECT_EQ(Enc(*t, "hi a"), (Ids{12, 5, 0}));
  EXPECT_EQ(Enc(*t, "ahi"), (Ids{0, 2, 3}));
  EXPECT_TRUE(t->IsSpecial(10));
  EXPECT_FALSE(t->IsSpecial(12));
  EXPECT_FALSE(t->IsSpecial(0));
  EXPECT_EQ(t->TokenToId("<m>"), 11);
  EXPECT_EQ(t->TokenToId("b"), 1);
  EXPECT_EQ(t->TokenToId("zz"), std::nullopt);
  EXPECT_EQ(t->vocab_size(), 14);
  EXPECT_EQ(t->Decode(Ids{0, 10, 1}, false), "a <s> b");  // no decoder: joined with spaces
  EXPECT_EQ(t->Decode(Ids{0, 10, 1}, true), "a b");
  EXPECT_EQ(t->Decode(Ids{0, 999, -5, 1}, false), "a b");  // unknown ids are ignored
}

TEST(AddedTokensTest, NormalizedTokensMatchAfterNormalization) {
  Json vocab = CharVocab("abxy");
  Json added = Json::array({Added(10, "XY", false)});
  auto t = Load(TokenizerJson(BpeModel(vocab), Json{{"type", "Lowercase"}}, nullptr, nullptr, nullptr, added));
  EXPECT_EQ(Enc(*t, "aXYb"), (Ids{0, 10, 1}));
  EXPECT_EQ(Enc(*t, "axyb"), (Ids{0, 10, 1}));
}

TEST(PostProcessorTest, TemplatesAndAddSpecialTokens) {
  Json vocab = CharVocab("ab");
  vocab["<s>"] = 5;
  vocab["</s>"] = 6;
  const Json added = Json::array({Added(5, "<s>", true), Added(6, "</s>", true)});
  const Json tmpl = {{"type", "TemplateProcessing"},
                     {"single", Json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                             {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}})},
                     {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {5}}, {"tokens", {"<s>"}}}},
                                         {"</s>", {{"id", "</s>"}, {"ids", {6}}, {"tokens", {"</s>"}}}}}}};
  auto t = Load(TokenizerJson(BpeModel(vocab), nullptr, nullptr, tmpl, nullptr, added));
  EXPECT_EQ(Enc(*t, "ab", true), (Ids{5, 0, 1, 6}));
  EXPECT_EQ(Enc(*t, "ab", false), (Ids{0, 1}));
  EXPECT_EQ(Enc(*t, "", true), (Ids{5, 6}));
  const Json seq = {{"type", "Sequence"}, {"processors", Json::array({{{"type", "ByteLevel"}}, tmpl})}};
  EXPECT_EQ(Enc(*Load(TokenizerJson(BpeModel(vocab), nullptr, nullptr, seq, nullptr, added)), "a", true),
            (Ids{5, 0, 6}));
  const Json bert = {{"type", "BertProcessing"}, {"cls", {"<s>", 5}}, {"sep", {"</s>", 6}}};
  EXPECT_EQ(Enc(*Load(TokenizerJson(BpeModel(vocab), nullptr, nullptr, bert, nullptr, added)), "a", true),
            (Ids{5, 0, 6}));
  // transformers' Llama tokenizer classes rebuild the template from the config.
  auto llama = Load(TokenizerJson(BpeModel(vocab), nullptr, nullptr, tmpl, nullptr, added),
                    R"({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                        "add_bos_token": false, "add_eos_token": true})");
  EXPECT_EQ(Enc(*llama, "ab", true), (Ids{0, 1, 6}));
  EXPECT_EQ(llama->bos_id(), 5);
  EXPECT_EQ(llama->eos_id(), 6);
  auto defaults = Load(TokenizerJson(BpeModel(vocab), nullptr, nullptr, nullptr, nullptr, added),
                       R"({"tokenizer_class": "LlamaTokenizer", "bos_token": {"content": "<s>"}})");
  EXPECT_EQ(Enc(*defaults, "ab", true), (Ids{5, 0, 1}));
}

TEST(TokenizerTest, InvalidUtf8NamesTheByteOffset) {
  auto t = Load(TokenizerJson(BpeModel(CharVocab("abc"))));
  EXPECT_TRUE(IsError(t->Encode("ab\xFF" "c", true).status(), absl::StatusCode::kInvalidArgument,
                      {"not valid UTF-8", "byte offset 2"}));
  EXPECT_TRUE(IsError(t->Encode("a\xC3", true).status(), absl::StatusCode::kInvalidArgument, {"byte offset 1"}));
  EXPECT_TRUE(IsError(t->Encode("\xED\xA0\x80", true).status(), absl::StatusCode::kInvalidArgument,
                      {"byte offset 0"}));  // a surrogate
  EXPECT_TRUE(IsError(t->Encode("\xC0\x80", true).status(), absl::StatusCode::kInvalidArgument,
                      {"byte offset 0"}));  // overlong
}

TEST(TokenizerTest, CleanUpTokenizationSpacesFollowsTheConfig) {
  Json vocab = CharVocab("a.,'snt");
  auto plain = Load(TokenizerJson(BpeModel(vocab)));
  auto clean = Load(TokenizerJson(BpeModel(vocab)), R"({"clean_up_tokenization_spaces": true})");
  const Ids ids = {0, 1, 0, 2, 3, 4};  // joined with spaces: "a . a , ' s"
  EXPECT_EQ(plain->Decode(ids, false), "a . a , ' s");
  EXPECT_EQ(clean->Decode(ids, false), "a. a,'s");
}

TEST(TokenizerTest, LoadReadsConfigAndChatTemplate) {
  namespace fs = std::filesystem;
  const std::string dir = adapterd::testing::MakeTempDir("tokenizer-load");
  Json vocab = CharVocab("ab");
  vocab["<s>"] = 2;
  std::ofstream(dir + "/tokenizer.json") << TokenizerJson(BpeModel(vocab), nullptr, nullptr, nullptr, nullptr,
                                                          Json::array({Added(2, "<s>", true)}))
                                                .dump();
  std::ofstream(dir + "/tokenizer_config.json")
      << R"({"bos_token": "<s>", "eos_token": "<s>", "pad_token": "b", "unk_token": "zz", "add_bos_token": true,
             "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})";
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->config().chat_template, "D");
  EXPECT_EQ((*t)->config().bos_token_id, 2);
  EXPECT_EQ((*t)->config().pad_token_id, 1);
  EXPECT_EQ((*t)->config().unk_token_id, std::nullopt);
  EXPECT_EQ((*t)->config().add_bos_token, true);
  std::ofstream(dir + "/chat_template.jinja") << "J";
  t = Tokenizer::Load(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->config().chat_template, "J");
  fs::remove(dir + "/tokenizer.json");
  EXPECT_TRUE(IsError(Tokenizer::Load(dir).status(), absl::StatusCode::kFailedPrecondition, {dir}));
  std::ofstream(dir + "/tokenizer.json") << "{";
  EXPECT_TRUE(IsError(Tokenizer::Load(dir).status(), absl::StatusCode::kInvalidArgument,
                      {dir + "/tokenizer.json", "not valid JSON"}));
}

// Many threads share one Tokenizer (and its piece cache) and agree with one.
TEST(TokenizerTest, ConcurrentEncodeAndDecodeAgree) {
  Json vocab = CharVocab("abcdefgh ");
  Json merges = Json::array({Json::array({"a", "b"}), Json::array({"c", "d"}), Json::array({"ab", "cd"})});
  vocab["ab"] = 20;
  vocab["cd"] = 21;
  vocab["abcd"] = 22;
  auto t = Load(TokenizerJson(BpeModel(vocab, merges), nullptr,
                              Json{{"type", "WhitespaceSplit"}}));
  ASSERT_NE(t, nullptr);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    std::string s;
    for (int k = 0; k < 40; ++k) s += "abcdefgh "[(i * 7 + k * k) % 9];
    texts.push_back(s);
  }
  std::vector<Ids> want;
  for (const std::string& s : texts) want.push_back(Enc(*t, s));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          absl::StatusOr<Ids> ids = t->Encode(texts[i], false);
          if (!ids.ok() || *ids != want[i] || t->Decode(*ids, false).empty()) ++mismatches[w];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

}  // namespace
}  // namespace adapterd::text
