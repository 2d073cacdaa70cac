#include "server/text/unicode_util.h"

#include <string>

#include "gtest/gtest.h"

namespace adapterd::text {
namespace {

std::string Lossy(const std::string& bytes) {
  std::string out;
  AppendLossyUtf8(&out, bytes);
  return out;
}

const std::string kFffd = "\xEF\xBF\xBD";

TEST(UnicodeUtilTest, FindInvalidUtf8) {
  EXPECT_EQ(FindInvalidUtf8(""), std::nullopt);
  EXPECT_EQ(FindInvalidUtf8("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"), std::nullopt);
  EXPECT_EQ(FindInvalidUtf8("ab\x80"), 2u);
  EXPECT_EQ(FindInvalidUtf8("a\xC3"), 1u);            // truncated
  EXPECT_EQ(FindInvalidUtf8("\xC1\xBF"), 0u);         // overlong
  EXPECT_EQ(FindInvalidUtf8("x\xED\xA0\x80"), 1u);    // surrogate
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u); // beyond U+10FFFF
  EXPECT_EQ(FindInvalidUtf8(std::string("a\0b", 3)), std::nullopt);
}

TEST(UnicodeUtilTest, LossyReplacesMaximalSubparts) {
  EXPECT_EQ(Lossy("a\xE2\x82" "b"), "a" + kFffd + "b");
  EXPECT_EQ(Lossy("\xF0\x80"), kFffd + kFffd);
  EXPECT_EQ(Lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);
  EXPECT_EQ(Lossy("\xC3\xA9"), "\xC3\xA9");
}

TEST(UnicodeUtilTest, IncompleteSuffix) {
  EXPECT_EQ(IncompleteUtf8Suffix("a"), 0u);
  EXPECT_EQ(IncompleteUtf8Suffix("a\xE2"), 1u);
  EXPECT_EQ(IncompleteUtf8Suffix("a\xE2\x82"), 2u);
  EXPECT_EQ(IncompleteUtf8Suffix("\xE2\x82\xAC"), 0u);
  EXPECT_EQ(IncompleteUtf8Suffix("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(IncompleteUtf8Suffix("\xE0\x80"), 0u);  // can never be completed
  EXPECT_EQ(IncompleteUtf8Suffix("\x80"), 0u);
}

TEST(UnicodeUtilTest, ClassesAndCase) {
  EXPECT_TRUE(IsWhitespace(0x3000));
  EXPECT_FALSE(IsWhitespace(0x200B));
  EXPECT_TRUE(IsNumeric(0x0663));  // Arabic-Indic three
  EXPECT_TRUE(IsAlphanumeric(0x4E2D));
  EXPECT_TRUE(IsPunctuation('$'));
  EXPECT_TRUE(IsPunctuation(0x3002));
  EXPECT_EQ(ToLower("\xC3\x89T\xC3\xA9"), "\xC3\xA9t\xC3\xA9");
}

}  // namespace
}  // namespace adapterd::text
