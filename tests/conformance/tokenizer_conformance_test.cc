// adapterd's tokenizers against Hugging Face tokenizers/transformers and
// SentencePiece, live: tests/conformance/tokenizer_reference.py trains seven
// tokenizers (GPT-2, Llama 3 and Qwen2 byte-level BPE; Llama 2 style
// byte-fallback BPE in tokenizer.json with a Metaspace pre-tokenizer and with
// Prepend/Replace normalizers; SentencePiece BPE and unigram
// tokenizer.model) and records the reference encodings and decodes of
// 10,000 strings and 2,000 random id sequences each. Every one must match
// exactly, and streaming through IncrementalDecoder must give the same text
// in deltas that are each valid UTF-8.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/text/incremental_decoder.h"
#include "server/text/sentencepiece_model.h"
#include "server/text/tokenizer.h"
#include "server/text/unicode_util.h"
#include "tests/support/test_env.h"

namespace adapterd::text {
namespace {

namespace fs = std::filesystem;
using adapterd::testing::BinaryDir;
using adapterd::testing::ReferencePython;
using adapterd::testing::RunCommand;
using adapterd::testing::SourceDir;
using Json = nlohmann::json;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The reference data, generated once per build tree for each version of the
// script (tests in other processes reuse it; a rename publishes it whole).
absl::StatusOr<std::string> ReferenceDir() {
  const std::string script = SourceDir() + "/tests/conformance/tokenizer_reference.py";
  const std::string text = ReadAll(script);
  if (text.empty()) return absl::NotFoundError(script + " is missing");
  const std::string dir =
      absl::StrCat(BinaryDir(), "/tokenizer-reference-", std::hash<std::string>()(text) % 1000000007);
  if (fs::exists(dir + "/done")) return dir;
  absl::StatusOr<std::string> py = ReferencePython();
  if (!py.ok()) return py.status();
  const std::string tmp = absl::StrCat(dir, ".tmp-", getpid());
  fs::remove_all(tmp);
  absl::StatusOr<std::string> out = RunCommand(absl::StrCat(*py, " ", script, " ", tmp));
  if (!out.ok()) {
    fs::remove_all(tmp);
    return out.status();
  }
  std::ofstream(tmp + "/done") << *out;
  std::error_code ec;
  fs::rename(tmp, dir, ec);  // another process may have published it first
  if (ec) fs::remove_all(tmp);
  if (!fs::exists(dir + "/done")) return absl::InternalError("could not publish " + dir);
  return dir;
}

std::vector<int32_t> Ids(const Json& j) { return j.get<std::vector<int32_t>>(); }

std::string Show(const std::string& s) { return Json(s).dump(); }

// Streams `ids` and checks each delta; returns the concatenation.
std::string Stream(const Tokenizer& t, const std::vector<int32_t>& ids, bool skip, int* bad_deltas) {
  IncrementalDecoder dec(t, skip);
  std::string all;
  for (int32_t id : ids) {
    const std::string d = dec.Push(id);
    if (FindInvalidUtf8(d)) ++*bad_deltas;
    all += d;
  }
  const std::string rest = dec.Finish();
  if (FindInvalidUtf8(rest)) ++*bad_deltas;
  return all + rest;
}

class TokenizerConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ADAPTERD_REQUIRE_REFERENCE();
    if (GetParam().rfind("sp_", 0) == 0 && !SentencePieceModel::Supported()) {
      if (adapterd::testing::InCi()) FAIL() << "CI=true: SentencePiece is unavailable in this build";
      GTEST_SKIP() << "SentencePiece is not available in sanitizer builds";
    }
    absl::StatusOr<std::string> dir = ReferenceDir();
    ASSERT_TRUE(dir.ok()) << dir.status();
    const std::string d = *dir + "/" + GetParam();
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(d);
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = *std::move(t);
    reference_ = Json::parse(ReadAll(d + "/reference.json"));
  }

  // Checks decode, decode with skip, and both streamed, for one id list.
  void CheckDecodes(const std::vector<int32_t>& ids, const Json& c, int* failures, int* bad_deltas) {
    for (bool skip : {false, true}) {
      const std::string want = c[skip ? "decode_skip" : "decode"].get<std::string>();
      const std::string got = tokenizer_->Decode(ids, skip);
      const std::string streamed = Stream(*tokenizer_, ids, skip, bad_deltas);
      if (got != want || streamed != want) {
        if (++*failures <= 5) {
          ADD_FAILURE() << GetParam() << " decode(skip=" << skip << ") of " << Json(ids).dump() << "\n  want "
                        << Show(want) << "\n  got  " << Show(got) << "\n  streamed " << Show(streamed);
        }
      }
    }
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  Json reference_;
};

TEST_P(TokenizerConformanceTest, EncodesAndDecodesLikeTheReference) {
  const Json& cases = reference_["encode"];
  ASSERT_GE(cases.size(), 10000u);
  int failures = 0, bad_deltas = 0;
  for (const Json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    for (bool special : {true, false}) {
      const std::vector<int32_t> want = Ids(c[special ? "ids" : "ids_plain"]);
      absl::StatusOr<std::vector<int32_t>> got = tokenizer_->Encode(text, special);
      if (!got.ok() || *got != want) {
        if (++failures <= 5) {
          ADD_FAILURE() << GetParam() << " encode(add_special_tokens=" << special << ") of " << Show(text)
                        << "\n  want " << Json(want).dump() << "\n  got  "
                        << (got.ok() ? Json(*got).dump() : got.status().ToString());
        }
      }
    }
    CheckDecodes(Ids(c["ids"]), c, &failures, &bad_deltas);
  }
  EXPECT_EQ(failures, 0) << "mismatches of " << cases.size() << " strings";
  EXPECT_EQ(bad_deltas, 0) << "streamed deltas that were not valid UTF-8";
}

TEST_P(TokenizerConformanceTest, DecodesRandomIdsLikeTheReference) {
  const Json& cases = reference_["decode"];
  ASSERT_GE(cases.size(), 1000u);
  int failures = 0, bad_deltas = 0;
  for (const Json& c : cases) CheckDecodes(Ids(c["ids"]), c, &failures, &bad_deltas);
  EXPECT_EQ(failures, 0) << "mismatches of " << cases.size() << " id sequences";
  EXPECT_EQ(bad_deltas, 0) << "streamed deltas that were not valid UTF-8";
}

TEST_P(TokenizerConformanceTest, VocabularyAndSpecialTokens) {
  EXPECT_EQ(tokenizer_->vocab_size(), reference_["vocab_size"].get<int64_t>());
  const Json& first = reference_["encode"][0];  // the empty string
  ASSERT_EQ(first["text"].get<std::string>(), "");
  const std::vector<int32_t> specials = Ids(first["ids"]);
  for (int32_t id : specials) EXPECT_TRUE(tokenizer_->IsSpecial(id)) << id;
  if (!specials.empty() && tokenizer_->config().add_bos_token.value_or(true) && tokenizer_->bos_id()) {
    EXPECT_EQ(specials.front(), *tokenizer_->bos_id());
  }
}

INSTANTIATE_TEST_SUITE_P(Trained, TokenizerConformanceTest,
                         ::testing::Values("gpt2", "llama3", "qwen2", "llama2_metaspace", "llama2_legacy", "sp_bpe",
                                           "sp_unigram"));

}  // namespace
}  // namespace adapterd::text
