#include "server/model/safetensors.h"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/safetensors_bytes.h"

namespace adapterd::model {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using safetensors_test::Bytes;
using safetensors_test::IsInvalid;
using safetensors_test::Parse;
using safetensors_test::Raw;
using safetensors_test::Values;

// A fresh directory under testing::TempDir(), removed at the end of the test.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("safetensors_test_", ::getpid(), "_", info->name(), "_", counter++);
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  void WriteRaw(const std::string& path, const std::string& bytes) const {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << path;
  }

  fs::path dir_;
};

// ----------------------------------------------------------------------------
// dtypes

TEST(SafetensorsDTypeTest, EveryNameParsesAndRoundTrips) {
  const std::map<std::string, int> bits = {
      {"BOOL", 8},     {"U8", 8},          {"I8", 8},          {"I16", 16},     {"U16", 16},
      {"F16", 16},     {"BF16", 16},       {"I32", 32},        {"U32", 32},     {"F32", 32},
      {"F64", 64},     {"I64", 64},        {"U64", 64},        {"C64", 64},     {"F8_E5M2", 8},
      {"F8_E4M3", 8},  {"F8_E8M0", 8},     {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8},
      {"F4", 4},       {"F6_E2M3", 6},     {"F6_E3M2", 6},
  };
  ASSERT_EQ(bits.size(), 22u);
  for (const auto& [name, width] : bits) {
    StDType d = StDType::kBool;
    ASSERT_TRUE(ParseStDType(name, &d)) << name;
    EXPECT_EQ(StDTypeName(d), name);
    EXPECT_EQ(StDTypeBits(d), width) << name;
  }
  StDType d = StDType::kU8;
  ASSERT_TRUE(ParseStDType("F32", &d));
  EXPECT_EQ(d, StDType::kF32);
  ASSERT_TRUE(ParseStDType("BF16", &d));
  EXPECT_EQ(d, StDType::kBF16);
  ASSERT_TRUE(ParseStDType("F8_E4M3FNUZ", &d));
  EXPECT_EQ(d, StDType::kF8E4M3FNUZ);
}

TEST(SafetensorsDTypeTest, UnknownNamesAreRejected) {
  StDType d = StDType::kF16;
  for (const char* name : {"", "f32", "FP32", "F32 ", "F8", "float32", "bf16"}) {
    EXPECT_FALSE(ParseStDType(name, &d)) << name;
  }
  EXPECT_FALSE(ParseStDType(std::string_view("F32\0", 4), &d));
  EXPECT_EQ(d, StDType::kF16);  // untouched
}

TEST(SafetensorsDTypeTest, Numel) {
  StTensorInfo t;
  t.shape = {};
  EXPECT_EQ(t.numel(), 1);
  t.shape = {2, 3, 4};
  EXPECT_EQ(t.numel(), 24);
  t.shape = {5, 0, 7};
  EXPECT_EQ(t.numel(), 0);
}

// ----------------------------------------------------------------------------
// Serialisation and round trips

TEST(SafetensorsSerializeTest, LayoutPaddingAndOrder) {
  const std::string a = Raw(std::vector<float>{1.5f, -2.0f});
  const std::string b = Raw(std::vector<uint8_t>{7, 8, 9});
  const std::string bytes = SerializeSafetensors(
      {{"z.first", StDType::kF32, {2}, a}, {"a.second", StDType::kU8, {3}, b}});
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + a.size() + b.size());
  const std::string header = bytes.substr(8, n);
  EXPECT_THAT(header, StartsWith("{"));
  EXPECT_THAT(header, Not(HasSubstr("__metadata__")));
  // Padding is spaces after the JSON.
  const size_t close = header.find_last_of('}');
  ASSERT_NE(close, std::string::npos);
  EXPECT_EQ(header.substr(close + 1), std::string(n - close - 1, ' '));
  EXPECT_THAT(header, HasSubstr(R"("z.first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"));
  EXPECT_THAT(header, HasSubstr(R"("a.second":{"dtype":"U8","shape":[3],"data_offsets":[8,11]})"));
  // Data in the given order, not name order.
  EXPECT_EQ(bytes.substr(8 + n), a + b);
}

TEST(SafetensorsSerializeTest, EmptyFileIsValid) {
  const std::string bytes = SerializeSafetensors({});
  EXPECT_EQ(bytes.size(), 16u);  // 8 + "{}" padded to 8
  EXPECT_EQ(bytes.substr(8), "{}      ");
  auto f = Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE((*f)->tensors().empty());
  EXPECT_TRUE((*f)->metadata().empty());
}

TEST(SafetensorsSerializeTest, MetadataIsWrittenWhenPresent) {
  const std::string bytes = SerializeSafetensors({}, {{"format", "pt"}, {"note", "a \"quoted\" value"}});
  EXPECT_THAT(bytes, HasSubstr(R"("__metadata__":{"format":"pt","note":"a \"quoted\" value"})"));
  auto f = Parse(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"note", "a \"quoted\" value"}}));
}

class SafetensorsRoundTripTest : public TempDirTest {};

TEST_F(SafetensorsRoundTripTest, WriteOpenReadsBackEveryKind) {
  const std::vector<float> f32 = {0.5f, -1.25f, 3.0f, 1e-3f, -7.5f, 42.0f};
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC000, 0x0000, 0x7F80};  // 1, -2, 0, inf
  const std::vector<int64_t> i64 = {-1, 0, INT64_MAX, INT64_MIN, 123456789012345};
  const std::vector<float> scalar = {3.25f};
  const std::string f32_bytes = Raw(f32), bf16_bytes = Raw(bf16), i64_bytes = Raw(i64),
                    scalar_bytes = Raw(scalar);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"adapter", "lora-ü"}};
  const std::string path = Path("model.safetensors");
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"w.f32", StDType::kF32, {2, 3}, f32_bytes},
                                {"w.bf16", StDType::kBF16, {2, 2}, bf16_bytes},
                                {"empty", StDType::kF16, {0, 4}, ""},
                                {"w.i64", StDType::kI64, {5}, i64_bytes},
                                {"scalar", StDType::kF32, {}, scalar_bytes}},
                               metadata)
                  .ok());
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));

  auto opened = SafetensorsFile::Open(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const SafetensorsFile& f = **opened;
  EXPECT_EQ(f.label(), path);
  EXPECT_EQ(f.size_bytes(), fs::file_size(path));
  EXPECT_EQ(f.metadata(), metadata);

  // Ordered by offset: the order they were written in (empty shares offset 32
  // with w.i64 and sorts first because it is shorter).
  std::vector<std::string> names;
  for (const StTensorInfo& t : f.tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ElementsAre("w.f32", "w.bf16", "empty", "w.i64", "scalar"));

  const StTensorInfo* t = f.Find("w.f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, StDType::kF32);
  EXPECT_THAT(t->shape, ElementsAre(2, 3));
  EXPECT_EQ(t->begin, 0u);
  EXPECT_EQ(t->end, 24u);
  EXPECT_EQ(t->numel(), 6);
  EXPECT_EQ(Values<float>(f.Data(*t)), f32);

  t = f.Find("w.bf16");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, StDType::kBF16);
  EXPECT_THAT(t->shape, ElementsAre(2, 2));
  EXPECT_EQ(t->begin, 24u);
  EXPECT_EQ(t->end, 32u);
  EXPECT_EQ(Values<uint16_t>(f.Data(*t)), bf16);

  t = f.Find("empty");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, StDType::kF16);
  EXPECT_THAT(t->shape, ElementsAre(0, 4));
  EXPECT_EQ(t->numel(), 0);
  EXPECT_EQ(t->begin, 32u);
  EXPECT_EQ(t->end, 32u);
  EXPECT_TRUE(f.Data(*t).empty());

  t = f.Find("w.i64");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, StDType::kI64);
  EXPECT_THAT(t->shape, ElementsAre(5));
  EXPECT_EQ(Values<int64_t>(f.Data(*t)), i64);

  t = f.Find("scalar");
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(t->shape.empty());
  EXPECT_EQ(t->numel(), 1);
  EXPECT_EQ(t->end - t->begin, 4u);
  EXPECT_EQ(Values<float>(f.Data(*t)), scalar);

  EXPECT_EQ(f.Find("missing"), nullptr);
  EXPECT_EQ(f.Find("__metadata__"), nullptr);
  EXPECT_EQ(f.Find("w.f3"), nullptr);

  // The same bytes through FromBytes give the same result.
  std::ifstream in(path, std::ios::binary);
  std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto copy = Parse(contents);
  ASSERT_TRUE(copy.ok()) << copy.status();
  ASSERT_EQ((*copy)->tensors().size(), 5u);
  EXPECT_EQ(Values<float>((*copy)->Data(*(*copy)->Find("w.f32"))), f32);
  EXPECT_EQ((*copy)->metadata(), metadata);
}

TEST_F(SafetensorsRoundTripTest, DataOwnerOutlivesTheFile) {
  const std::vector<float> values = {1, 2, 3, 4};
  const std::string path = Path("owned.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"x", StDType::kF32, {4}, Raw(values)}}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  std::span<const std::byte> data = (*f)->Data((*f)->tensors().at(0));
  std::shared_ptr<const void> owner = (*f)->data_owner();
  ASSERT_NE(owner, nullptr);
  f->reset();
  fs::remove(path);  // the mapping survives unlink too
  EXPECT_EQ(Values<float>(data), values);
}

TEST_F(SafetensorsRoundTripTest, WriteReplacesAnExistingFile) {
  const std::string path = Path("m.safetensors");
  WriteRaw(path, "old contents that are not safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", StDType::kU8, {2}, "\x01\x02"}}).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 1u);
  EXPECT_EQ((*f)->tensors()[0].name, "a");
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir_)) left.push_back(e.path().filename().string());
  EXPECT_THAT(left, ElementsAre("m.safetensors"));
}

TEST_F(SafetensorsRoundTripTest, SubByteDTypes) {
  const std::string path = Path("f4.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"f4", StDType::kF4, {2, 3}, "abc"},
                                      {"f6", StDType::kF6E2M3, {4}, "xyz"},
                                      {"f8", StDType::kF8E8M0, {1}, "q"}})
                  .ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const StTensorInfo* f4 = (*f)->Find("f4");
  ASSERT_NE(f4, nullptr);
  EXPECT_EQ(f4->end - f4->begin, 3u);
  const StTensorInfo* f6 = (*f)->Find("f6");
  ASSERT_NE(f6, nullptr);
  EXPECT_EQ(f6->dtype, StDType::kF6E2M3);
  EXPECT_EQ(f6->end - f6->begin, 3u);
}

class SafetensorsOpenTest : public TempDirTest {};

TEST_F(SafetensorsOpenTest, MissingFileIsNotFound) {
  const std::string path = Path("nope.safetensors");
  auto f = SafetensorsFile::Open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound) << f.status();
  EXPECT_THAT(std::string(f.status().message()), StartsWith(path));
}

TEST_F(SafetensorsOpenTest, EmptyFile) {
  const std::string path = Path("empty.safetensors");
  WriteRaw(path, "");
  EXPECT_TRUE(IsInvalid(SafetensorsFile::Open(path), {"0 bytes", "too small"}, path));
}

TEST_F(SafetensorsOpenTest, TruncatedFile) {
  const std::string path = Path("short.safetensors");
  WriteRaw(path, std::string("\x10\0\0", 3));
  EXPECT_TRUE(IsInvalid(SafetensorsFile::Open(path), {"3 bytes"}, path));
  const std::string full = SerializeSafetensors({{"w", StDType::kF32, {4}, std::string(16, 'x')}});
  WriteRaw(path, full.substr(0, full.size() - 1));
  EXPECT_TRUE(IsInvalid(SafetensorsFile::Open(path), {"tensor 'w'", "run past the end"}, path));
  WriteRaw(path, full.substr(0, 20));
  EXPECT_TRUE(IsInvalid(SafetensorsFile::Open(path), {"header length", "past the end"}, path));
}

TEST_F(SafetensorsOpenTest, MalformedFileNamesThePath) {
  const std::string path = Path("hole.safetensors");
  WriteRaw(path, Bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
                       "abc"));
  EXPECT_TRUE(IsInvalid(SafetensorsFile::Open(path), {"hole", "tensor 'b'"}, path));
  WriteRaw(path, Bytes(R"({"__metadata__":{"x":1}})"));
  EXPECT_TRUE(IsInvalid(SafetensorsFile::Open(path), {"key 'x'", "not a string"}, path));
}

TEST_F(SafetensorsOpenTest, LimitsApply) {
  const std::string path = Path("limits.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", StDType::kU8, {1}, "a"}, {"b", StDType::kU8, {1}, "b"}}).ok());
  SafetensorsLimits limits;
  limits.max_tensors = 1;
  EXPECT_TRUE(IsInvalid(SafetensorsFile::Open(path, limits), {"more than 1 tensors", "'b'"}, path));
  limits = {};
  limits.max_header_bytes = 16;
  EXPECT_TRUE(IsInvalid(SafetensorsFile::Open(path, limits), {"exceeds the limit of 16 bytes"}, path));
}

TEST_F(SafetensorsOpenTest, DirectoryIsNotAFile) {
  auto f = SafetensorsFile::Open(dir_.string());
  EXPECT_TRUE(IsInvalid(f, {"not a regular file"}, dir_.string()));
}

// ----------------------------------------------------------------------------
// WriteSafetensors(): invalid input and I/O errors

class SafetensorsWriteTest : public TempDirTest {};

TEST_F(SafetensorsWriteTest, RejectsInconsistentTensors) {
  const std::string path = Path("bad.safetensors");
  absl::Status s = WriteSafetensors(path, {{"w", StDType::kF32, {2, 2}, std::string(12, 'x')}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), StartsWith(path));
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor 'w': 12 bytes given but F32 [2, 2] needs 16"));

  s = WriteSafetensors(path, {{"d", StDType::kU8, {1}, "a"}, {"d", StDType::kU8, {1}, "b"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("duplicate tensor name 'd'"));

  s = WriteSafetensors(path, {{"__metadata__", StDType::kU8, {1}, "a"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("__metadata__"));

  s = WriteSafetensors(path, {{"neg", StDType::kU8, {-1}, ""}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor 'neg'"));

  s = WriteSafetensors(path, {{"f4", StDType::kF4, {1}, ""}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not a whole number of bytes"));

  s = WriteSafetensors(path, {{"bad\xFFname", StDType::kU8, {0}, ""}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor name 'bad\\xffname' is not valid UTF-8"));

  s = WriteSafetensors(path, {}, {{"k", "\xC3"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("__metadata__ entry 'k'"));

  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST_F(SafetensorsWriteTest, MissingDirectoryFailsWithThePath) {
  const std::string path = Path("no/such/dir/m.safetensors");
  absl::Status s = WriteSafetensors(path, {{"a", StDType::kU8, {1}, "a"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), StartsWith(path));
  EXPECT_THAT(std::string(s.message()), HasSubstr(".tmp."));
}

TEST_F(SafetensorsWriteTest, RenameFailureLeavesNoTemporaryFile) {
  // The destination is a non-empty directory: rename() fails.
  const std::string path = Path("taken");
  fs::create_directories(fs::path(path) / "inside");
  absl::Status s = WriteSafetensors(path, {{"a", StDType::kU8, {1}, "a"}});
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(path));
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
  EXPECT_TRUE(fs::is_directory(path));
}

}  // namespace
}  // namespace adapterd::model
