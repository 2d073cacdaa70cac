// The safetensors header parser (server/model/safetensors_header.cc),
// through SafetensorsFile::FromBytes: hand-written headers, valid and bad.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/safetensors.h"
#include "tests/support/safetensors_bytes.h"

namespace adapterd::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using safetensors_test::Bytes;
using safetensors_test::IsInvalid;
using safetensors_test::Le64;
using safetensors_test::Parse;
using safetensors_test::Raw;


// ----------------------------------------------------------------------------
// Valid hand-written headers

TEST(SafetensorsParseTest, TensorsAreSortedByOffsetNotName) {
  auto f = Parse(Bytes(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[3,5]},)"
                       R"("b":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})",
                       "BBBaa"));
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 2u);
  EXPECT_EQ((*f)->tensors()[0].name, "b");
  EXPECT_EQ((*f)->tensors()[1].name, "a");
  const auto a = (*f)->Data(*(*f)->Find("a"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a.data()), a.size()), "aa");
  const auto b = (*f)->Data(*(*f)->Find("b"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()), "BBB");
}

TEST(SafetensorsParseTest, PaddingWhitespaceUnknownFieldsAndUnicodeAreAccepted) {
  auto f = Parse(Bytes("{ \"caf\xC3\xA9\\u00e9\" : {\"dtype\": \"I8\", \"extra\": {\"x\": [1, {\"y\": null}]},"
                       " \"shape\": [ 1 ], \"data_offsets\": [0, 1]} }\n        ",
                       "z"));
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 1u);
  EXPECT_EQ((*f)->tensors()[0].name, "caf\xC3\xA9\xC3\xA9");
  EXPECT_EQ((*f)->tensors()[0].dtype, StDType::kI8);
}

TEST(SafetensorsParseTest, EmptyTensorsMayShareAnOffsetAtABoundary) {
  auto f = Parse(Bytes(R"({"e1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                       R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                       R"("e0":{"dtype":"F64","shape":[3,0],"data_offsets":[4,4]}})",
                       "abcd"));
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<std::string> names;
  for (const auto& t : (*f)->tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ElementsAre("a", "e0", "e1"));
}

TEST(SafetensorsParseTest, HundredThousandTensorsParse) {
  // 100k entries parse and are all indexed. (nlohmann's callback parser is
  // quadratic in the entry count and stalled for minutes here; the SAX
  // handler in safetensors.cc is linear by construction. Tests never assert
  // on time.)
  constexpr int kCount = 100'000;
  std::string header = "{";
  for (int i = 0; i < kCount; ++i) {
    absl::StrAppend(&header, i ? "," : "", "\"t", i, R"(":{"dtype":"U8","shape":[1],"data_offsets":[)",
                    i, ",", i + 1, "]}");
  }
  header += "}";
  auto f = Parse(Bytes(header, std::string(kCount, 'x')));
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), static_cast<size_t>(kCount));
  EXPECT_EQ((*f)->tensors()[kCount - 1].name, absl::StrCat("t", kCount - 1));
  EXPECT_EQ((*f)->Find("t4242")->begin, 4242u);
}

// ----------------------------------------------------------------------------
// Malformed input: framing

TEST(SafetensorsParseTest, EmptyAndShortInput) {
  EXPECT_TRUE(IsInvalid(Parse(""), {"0 bytes", "too small"}));
  EXPECT_TRUE(IsInvalid(Parse(std::string("\x02\0\0\0\0", 5)), {"5 bytes", "too small"}));
  EXPECT_TRUE(IsInvalid(Parse(std::string("\x02\0\0\0\0\0\0", 7)), {"7 bytes"}));
}

TEST(SafetensorsParseTest, HeaderLengthOverTheCap) {
  EXPECT_TRUE(IsInvalid(Parse(Le64(100'000'001) + "{}"),
                        {"header length 100000001", "limit of 100000000"}));
  EXPECT_TRUE(IsInvalid(Parse(Le64(UINT64_MAX)), {"header length 18446744073709551615"}));
  SafetensorsLimits small;
  small.max_header_bytes = 8;
  const std::string ok = Bytes("{}      ");
  EXPECT_TRUE(Parse(ok, small).ok());
  EXPECT_TRUE(IsInvalid(Parse(Bytes("{}       "), small), {"header length 9", "limit of 8"}));
}

TEST(SafetensorsParseTest, HeaderLengthBeyondTheFile) {
  EXPECT_TRUE(IsInvalid(Parse(Le64(10) + "{}"), {"header length 10", "past the end", "10 bytes"}));
  EXPECT_TRUE(IsInvalid(Parse(Le64(1)), {"header length 1", "past the end"}));
}

TEST(SafetensorsParseTest, HeaderMustBeAJsonObject) {
  EXPECT_TRUE(IsInvalid(Parse(Le64(0)), {"does not start with '{'"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes("[]")), {"does not start with '{'"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(" {}")), {"does not start with '{'"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes("\"{}\"")), {"does not start with '{'"}));
}

TEST(SafetensorsParseTest, BadJson) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes("{")), {"not valid JSON"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes("{\"a\":}")), {"not valid JSON", "column 6"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes("{'a':1}")), {"not valid JSON"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes("{} {}")), {"not valid JSON"}));
  // nlohmann stops at a NUL byte as if the input ended there.
  EXPECT_TRUE(IsInvalid(Parse(Bytes(std::string_view("{}\0\0", 4))), {"not valid JSON", "NUL byte at offset 2"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(std::string_view("{}\0 garbage", 10))), {"NUL byte at offset 2"}));
  // Not UTF-8; the message escapes the byte so that it stays valid UTF-8.
  auto f = Parse(Bytes("{\"\xFF\":1}"));
  EXPECT_TRUE(IsInvalid(f, {"not valid JSON", "ill-formed UTF-8", "\\xff"}));
  EXPECT_EQ(f.status().message().find('\xFF'), absl::string_view::npos);
  EXPECT_TRUE(IsInvalid(Parse(Bytes("{/* c */}")), {"not valid JSON"}));
}

TEST(SafetensorsParseTest, TrailingBytesAreRejected) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes("{}", "xyz")), {"3 trailing bytes", "[0, 3)"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "ab")),
                        {"1 trailing bytes", "[1, 2)"}));
}

// ----------------------------------------------------------------------------
// Malformed input: entries

TEST(SafetensorsParseTest, EntryMustBeAnObject) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"a.weight":5})")), {"tensor 'a.weight'", "not a JSON object"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"b":[0,1]})")), {"tensor 'b'", "an array"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"c":"F32"})")), {"tensor 'c'", "a string"}));
}

TEST(SafetensorsParseTest, UnknownDType) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", "abcd")),
                        {"tensor 'w'", "unknown dtype 'F33'"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", "abcd")),
                        {"tensor 'w'", "dtype is an unsigned integer, not a string"}));
}

TEST(SafetensorsParseTest, MissingFields) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"w":{"shape":[1],"data_offsets":[0,1]}})", "a")),
                        {"tensor 'w'", "missing \"dtype\""}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", "a")),
                        {"tensor 'w'", "missing \"shape\""}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"w":{"dtype":"U8","shape":[1]}})", "a")),
                        {"tensor 'w'", "missing \"data_offsets\""}));
}

TEST(SafetensorsParseTest, BadShapeDimensions) {
  auto with_shape = [](const std::string& shape) {
    return Parse(Bytes(absl::StrCat(R"({"w":{"dtype":"U8","shape":)", shape, R"(,"data_offsets":[0,0]}})")));
  };
  EXPECT_TRUE(IsInvalid(with_shape("[2,-3]"), {"tensor 'w'", "shape[1] is a negative number -3"}));
  EXPECT_TRUE(IsInvalid(with_shape("[2.5]"), {"tensor 'w'", "shape[0] is a non-integer number 2.5"}));
  EXPECT_TRUE(IsInvalid(with_shape("[1.0]"), {"tensor 'w'", "shape[0] is a non-integer number"}));
  EXPECT_TRUE(IsInvalid(with_shape("[1e2]"), {"tensor 'w'", "shape[0]"}));
  EXPECT_TRUE(IsInvalid(with_shape(R"([1,"2"])"), {"tensor 'w'", "shape[1] is a string"}));
  EXPECT_TRUE(IsInvalid(with_shape("[[1]]"), {"tensor 'w'", "shape[0] is an array"}));
  EXPECT_TRUE(IsInvalid(with_shape("[null]"), {"tensor 'w'", "shape[0] is null"}));
  EXPECT_TRUE(IsInvalid(with_shape("[9223372036854775808]"),
                        {"tensor 'w'", "shape[0] is 9223372036854775808, larger than 2^63-1"}));
  EXPECT_TRUE(IsInvalid(with_shape("[99999999999999999999]"), {"tensor 'w'", "shape[0]"}));
  EXPECT_TRUE(IsInvalid(with_shape("7"), {"tensor 'w'", "shape is an unsigned integer, not an array"}));
  EXPECT_TRUE(IsInvalid(with_shape("{}"), {"tensor 'w'", "shape is an object, not an array"}));
}

TEST(SafetensorsParseTest, ElementCountOverflow) {
  // 2^32 * 2^32 = 2^64 does not fit in int64.
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"big":{"dtype":"U8","shape":[4294967296,4294967296],)"
                                    R"("data_offsets":[0,0]}})")),
                        {"tensor 'big'", "shape [4294967296, 4294967296]", "more than 2^63-1 elements"}));
  // 2^62 elements fit, but 2^62 * 64 bits does not.
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"wide":{"dtype":"F64","shape":[4611686018427387904],)"
                                    R"("data_offsets":[0,0]}})")),
                        {"tensor 'wide': F64 [4611686018427387904] overflows a 64-bit byte count"}));
}

TEST(SafetensorsParseTest, SubByteSizeMustBeWholeBytes) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"q":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", "ab")),
                        {"tensor 'q': F4 [3] is 12 bits, not a whole number of bytes"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"q":{"dtype":"F6_E3M2","shape":[2],"data_offsets":[0,2]}})", "ab")),
                        {"tensor 'q'", "F6_E3M2", "12 bits"}));
  EXPECT_TRUE(Parse(Bytes(R"({"q":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}})", "ab")).ok());
}

TEST(SafetensorsParseTest, BadDataOffsets) {
  auto with_offsets = [](const std::string& offsets) {
    return Parse(Bytes(absl::StrCat(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":)", offsets, "}}"),
                       "ab"));
  };
  EXPECT_TRUE(IsInvalid(with_offsets("[0]"), {"tensor 'w'", "data_offsets has 1 entries, not 2"}));
  EXPECT_TRUE(IsInvalid(with_offsets("[]"), {"tensor 'w'", "data_offsets has 0 entries"}));
  EXPECT_TRUE(IsInvalid(with_offsets("[0,1,2]"), {"tensor 'w'", "more than 2 entries"}));
  EXPECT_TRUE(IsInvalid(with_offsets("[2,0]"), {"tensor 'w'", "data_offsets [2, 0] end before they begin"}));
  EXPECT_TRUE(IsInvalid(with_offsets("[-1,1]"), {"tensor 'w'", "data_offsets[0] is a negative number -1"}));
  EXPECT_TRUE(IsInvalid(with_offsets("[0,2.0]"), {"tensor 'w'", "data_offsets[1] is a non-integer number"}));
  EXPECT_TRUE(IsInvalid(with_offsets("\"0,2\""), {"tensor 'w'", "data_offsets is a string, not an array"}));
}

TEST(SafetensorsParseTest, SizeMismatchBetweenOffsetsAndShape) {
  EXPECT_TRUE(IsInvalid(
      Parse(Bytes(R"({"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})",
                  std::string(12, 'x'))),
      {"/p/model.safetensors: tensor 'a.weight': data_offsets [0, 12) hold 12 bytes but F32 [2, 2] needs 16"}));
  EXPECT_TRUE(IsInvalid(
      Parse(Bytes(R"({"s":{"dtype":"BF16","shape":[],"data_offsets":[0,4]}})", "abcd")),
      {"tensor 's'", "hold 4 bytes but BF16 [] needs 2"}));
}

TEST(SafetensorsParseTest, OverlappingRanges) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                    R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                                    "abcdef")),
                        {"tensor 'b'", "[2, 6) overlap tensor 'a' at [0, 4)"}));
  // Identical ranges.
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                    R"("y":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                                    "ab")),
                        {"tensor 'y'", "overlap tensor 'x'"}));
  // An empty tensor strictly inside another's range (the reference rejects it too).
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                    R"("e":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})",
                                    "abcd")),
                        {"tensor 'e'", "overlap tensor 'a'"}));
}

TEST(SafetensorsParseTest, HolesInTheBuffer) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                    R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                                    "abcdef")),
                        {"hole", "bytes [2, 4)", "before tensor 'b'"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"late":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", "ab")),
                        {"hole", "bytes [0, 1)", "tensor 'late'"}));
}

TEST(SafetensorsParseTest, RangePastTheEndOfTheBuffer) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", "abcd")),
                        {"tensor 'a'", "[0, 8) run past the end of the 4-byte data buffer"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"a":{"dtype":"U8","shape":[1],)"
                                    R"("data_offsets":[18446744073709551614,18446744073709551615]}})")),
                        {"tensor 'a'", "run past the end"}));
}

TEST(SafetensorsParseTest, DuplicateKeys) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"dup.w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                    R"("dup.w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                                    "ab")),
                        {"duplicate tensor name 'dup.w'"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"__metadata__":{},"__metadata__":{}})")),
                        {"duplicate key '__metadata__'"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"w":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", "a")),
                        {"tensor 'w'", "duplicate key 'dtype'"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"__metadata__":{"k":"1","k":"2"}})")),
                        {"__metadata__ has duplicate key 'k'"}));
  // A key written with an escape is the same key.
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"ab":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                                    R"("a\u0062":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})")),
                        {"duplicate tensor name 'ab'"}));
}

TEST(SafetensorsParseTest, MetadataMustMapStringsToStrings) {
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"__metadata__":{"format":"pt","step":5}})")),
                        {"__metadata__ value for key 'step' is an unsigned integer, not a string"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"__metadata__":{"nested":{"a":"b"}}})")),
                        {"__metadata__ value for key 'nested' is an object"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"__metadata__":{"n":null}})")), {"key 'n' is null"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"__metadata__":["a"]})")),
                        {"__metadata__ is an array, not an object of strings"}));
  EXPECT_TRUE(IsInvalid(Parse(Bytes(R"({"__metadata__":"pt"})")), {"__metadata__ is a string"}));
}

TEST(SafetensorsParseTest, TooManyTensors) {
  SafetensorsLimits limits;
  limits.max_tensors = 2;
  const std::string two = Bytes(R"({"__metadata__":{"a":"b"},)"
                                R"("t0":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                                R"("t1":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})");
  auto f = Parse(two, limits);  // metadata does not count
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().size(), 2u);
  const std::string three = Bytes(R"({"t0":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                                  R"("t1":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
                                  R"("t2":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})");
  EXPECT_TRUE(IsInvalid(Parse(three, limits), {"more than 2 tensors", "'t2'"}));
}

TEST(SafetensorsParseTest, NamesInMessagesAreEscapedAndBounded) {
  auto f = Parse(Bytes(R"({"a\u0000\nb":{"dtype":"X","shape":[],"data_offsets":[0,0]}})"));
  ASSERT_TRUE(IsInvalid(f, {"tensor 'a\\x00\\nb'", "unknown dtype 'X'"}));
  EXPECT_EQ(f.status().message().find('\0'), std::string_view::npos);
  const std::string long_name(5000, 'n');
  f = Parse(Bytes(absl::StrCat(R"({")", long_name, R"(":{"dtype":"X","shape":[],"data_offsets":[0,0]}})")));
  ASSERT_TRUE(IsInvalid(f, {"unknown dtype"}));
  EXPECT_LT(f.status().message().size(), 400u);
}

// Every truncation and many random corruptions of a valid file must either
// parse (with every range inside the buffer) or fail cleanly.
TEST(SafetensorsParseTest, CorruptedInputNeverCrashes) {
  const std::string valid = SerializeSafetensors(
      {{"a", StDType::kF32, {2, 2}, Raw(std::vector<float>{1, 2, 3, 4})},
       {"b", StDType::kBF16, {3}, Raw(std::vector<uint16_t>{1, 2, 3})},
       {"c", StDType::kI64, {}, Raw(std::vector<int64_t>{5})}},
      {{"k", "v"}});
  ASSERT_TRUE(Parse(valid).ok());
  for (size_t len = 0; len < valid.size(); ++len) {
    auto f = Parse(valid.substr(0, len));
    ASSERT_FALSE(f.ok()) << len;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << len;
  }
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string bad = valid;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) bad[rng() % bad.size()] = static_cast<char>(rng() & 0xFF);
    auto f = Parse(bad);
    if (!f.ok()) {
      ASSERT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
      continue;
    }
    ++parsed;
    uint64_t covered = 0;
    for (const StTensorInfo& t : (*f)->tensors()) {
      ASSERT_LE(t.begin, t.end);
      ASSERT_EQ((*f)->Data(t).size(), t.end - t.begin);
      covered += t.end - t.begin;
    }
    ASSERT_LE(covered, bad.size());
  }
  EXPECT_GT(parsed, 0);  // flips inside tensor data leave the file valid
}

// ----------------------------------------------------------------------------
// Open(): the mmap path


}  // namespace
}  // namespace adapterd::model
