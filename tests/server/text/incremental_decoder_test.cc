#include "server/text/incremental_decoder.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "server/text/pre_tokenizer.h"
#include "server/text/unicode_util.h"
#include "tests/server/text/text_test_util.h"

namespace adapterd::text {
namespace {

using testing::Added;
using testing::BpeModel;
using testing::Json;
using testing::Load;
using testing::TokenizerJson;
using Ids = std::vector<int32_t>;

const std::string kMeta = "\xE2\x96\x81";

// A Llama 2 style tokenizer: byte fallback, Metaspace, Replace/ByteFallback/Fuse/Strip decoding.
std::unique_ptr<Tokenizer> ByteFallbackTokenizer(const std::string& config = "") {
  Json vocab{{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) vocab[absl::StrFormat("<0x%02X>", b)] = 3 + b;
  int id = 259;
  for (const std::string& w : std::vector<std::string>{kMeta, kMeta + "Hello", kMeta + "world", "a", "b", ".", kMeta + "."}) vocab[w] = id++;
  Json model = BpeModel(vocab);
  model["unk_token"] = "<unk>";
  model["byte_fallback"] = true;
  const Json decoder = {
      {"type", "Sequence"},
      {"decoders", Json::array({{{"type", "Replace"}, {"pattern", {{"String", kMeta}}}, {"content", " "}},
                                {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
  return Load(TokenizerJson(model, nullptr,
                            Json{{"type", "Metaspace"}, {"prepend_scheme", "first"}, {"split", false}}, nullptr,
                            decoder, Json::array({Added(0, "<unk>", true), Added(1, "<s>", true), Added(2, "</s>", true)})),
              config);
}

// A GPT-2 style byte-level tokenizer: every byte a token, no merges.
std::unique_ptr<Tokenizer> ByteLevelTokenizer(const std::string& config = "") {
  Json vocab = Json::object();
  const auto& alphabet = ByteLevelAlphabet();
  for (int b = 0; b < 256; ++b) vocab[alphabet[b]] = b;
  return Load(TokenizerJson(BpeModel(vocab), nullptr, Json{{"type", "ByteLevel"}, {"add_prefix_space", false}},
                            nullptr, Json{{"type", "ByteLevel"}}, Json::array({Added(256, "<|end|>", true)})),
              config);
}

struct Streamed {
  std::vector<std::string> deltas;
  std::string text;
};

Streamed Stream(const Tokenizer& t, const Ids& ids, bool skip) {
  IncrementalDecoder dec(t, skip);
  Streamed s;
  for (int32_t id : ids) s.deltas.push_back(dec.Push(id));
  s.deltas.push_back(dec.Finish());
  for (const std::string& d : s.deltas) s.text += d;
  return s;
}

TEST(IncrementalDecoderTest, ByteFallbackCharacterIsHeldUntilComplete) {
  auto t = ByteFallbackTokenizer();
  ASSERT_NE(t, nullptr);
  const Ids ids = {1, 260, 261, 3 + 0xE2, 3 + 0x82, 3 + 0xAC, 262};  // <s> ▁Hello ▁world € a
  Streamed s = Stream(*t, ids, /*skip=*/true);
  EXPECT_EQ(s.text, "Hello world\xE2\x82\xAC" "a");
  EXPECT_EQ(s.text, t->Decode(ids, true));
  EXPECT_EQ(s.deltas[1], "Hello");  // the leading space is dropped at the start only
  EXPECT_EQ(s.deltas[2], " world");
  EXPECT_EQ(s.deltas[3], "");
  EXPECT_EQ(s.deltas[4], "");
  for (const std::string& d : s.deltas) EXPECT_FALSE(FindInvalidUtf8(d)) << d;
}

TEST(IncrementalDecoderTest, InvalidByteRunsBecomeReplacementCharacters) {
  auto t = ByteFallbackTokenizer();
  const Ids ids = {3 + 0xE2, 3 + 0x82, 262, 3 + 0xFF, 3 + 0xC3};
  Streamed s = Stream(*t, ids, false);
  EXPECT_EQ(s.text, t->Decode(ids, false));
  EXPECT_EQ(s.text, "\xEF\xBF\xBD\xEF\xBF\xBD" "a\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(IncrementalDecoderTest, ByteLevelCharacterSplitAcrossTokens) {
  auto t = ByteLevelTokenizer();
  ASSERT_NE(t, nullptr);
  absl::StatusOr<Ids> ids = t->Encode("a\xE2\x82\xAC\xF0\x9F\x98\x80!", false);
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 9u);  // one token per byte
  Streamed s = Stream(*t, *ids, false);
  EXPECT_EQ(s.text, "a\xE2\x82\xAC\xF0\x9F\x98\x80!");
  EXPECT_EQ(s.deltas[1], "");
  EXPECT_EQ(s.deltas[3], "\xE2\x82\xAC");
  EXPECT_EQ(s.deltas[7], "\xF0\x9F\x98\x80");
  // A lead byte followed by something else is final at once.
  const Ids bad = {(*ids)[1], (*ids)[0], (*ids)[8]};
  Streamed b = Stream(*t, bad, false);
  EXPECT_EQ(b.text, "\xEF\xBF\xBD" "a!");
  EXPECT_EQ(b.deltas[1], "\xEF\xBF\xBD" "a");
}

TEST(IncrementalDecoderTest, CleanUpHoldsBackOnlyAPossiblePatternStart) {
  auto t = ByteLevelTokenizer(R"({"clean_up_tokenization_spaces": true})");
  absl::StatusOr<Ids> ids = t->Encode("x do n't go . Yes 's", false);
  ASSERT_TRUE(ids.ok());
  Streamed s = Stream(*t, *ids, false);
  EXPECT_EQ(s.text, t->Decode(*ids, false));
  EXPECT_EQ(s.text, "x don't go. Yes's");
}

TEST(IncrementalDecoderTest, SkipsSpecialTokensAndUnknownIds) {
  auto t = ByteLevelTokenizer();
  const Ids ids = {'a', 256, 99999, -1};
  EXPECT_EQ(Stream(*t, ids, true).text, t->Decode(ids, true));
  EXPECT_EQ(Stream(*t, ids, false).text, t->Decode(ids, false));
  EXPECT_NE(t->Decode(ids, false).find("<|end|>"), std::string::npos);
}

TEST(IncrementalDecoderTest, FinishTwiceAndPushAfterFinishGiveNothing) {
  auto t = ByteLevelTokenizer();
  IncrementalDecoder dec(*t, false);
  (void)dec.Push(40);
  (void)dec.Finish();
  EXPECT_EQ(dec.Finish(), "");
  EXPECT_EQ(dec.Push(41), "");
}

// Random ids: the deltas always add up to Decode and are each valid UTF-8.
TEST(IncrementalDecoderTest, RandomIdsMatchDecode) {
  std::mt19937 rng(42);
  for (const std::string& config : {std::string(""), std::string(R"({"clean_up_tokenization_spaces": true})")}) {
    for (auto* make : {&ByteFallbackTokenizer, &ByteLevelTokenizer}) {
      auto t = make(config);
      ASSERT_NE(t, nullptr);
      std::uniform_int_distribution<int32_t> pick(-2, static_cast<int32_t>(t->vocab_size()) + 2);
      for (int round = 0; round < 2000; ++round) {
        Ids ids(rng() % 20);
        for (int32_t& id : ids) id = pick(rng);
        for (bool skip : {false, true}) {
          Streamed s = Stream(*t, ids, skip);
          ASSERT_EQ(s.text, t->Decode(ids, skip)) << ::testing::PrintToString(ids);
          for (const std::string& d : s.deltas) ASSERT_FALSE(FindInvalidUtf8(d)) << ::testing::PrintToString(ids);
        }
      }
    }
  }
}

}  // namespace
}  // namespace adapterd::text
