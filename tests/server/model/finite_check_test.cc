// FindNonFinite and CheckFinite: NaN, +Inf and -Inf are found in F32, F16
// and BF16 data at any position (inside the vectorised blocks, on their
// edges and in the tail), the first one is reported, subnormals and -0 are
// finite, and the data may start at any byte.
#include "server/model/finite_check.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "server/model/safetensors.h"
#include "tests/support/status_assertions.h"

namespace adapterd::model {
namespace {

using testing::IsError;

struct DType {
  StDType dtype;
  int bytes;
  uint32_t one, nan, pos_inf, neg_inf, min_subnormal, max_subnormal, neg_zero, max_finite;
};

// Bit patterns, little-endian, of each format.
const DType kDTypes[] = {
    {StDType::kF32, 4, 0x3F800000u, 0x7FC00000u, 0x7F800000u, 0xFF800000u, 0x00000001u, 0x007FFFFFu, 0x80000000u,
     0x7F7FFFFFu},
    {StDType::kF16, 2, 0x3C00u, 0x7E00u, 0x7C00u, 0xFC00u, 0x0001u, 0x03FFu, 0x8000u, 0x7BFFu},
    {StDType::kBF16, 2, 0x3F80u, 0x7FC0u, 0x7F80u, 0xFF80u, 0x0001u, 0x007Fu, 0x8000u, 0x7F7Fu},
};

// `n` copies of `fill`, with `data[i] = bits` for each (i, bits) in `set`,
// starting `offset` bytes into the returned buffer.
std::vector<std::byte> Make(const DType& d, int64_t n, uint32_t fill,
                            const std::vector<std::pair<int64_t, uint32_t>>& set = {}, int offset = 0) {
  std::vector<std::byte> out(static_cast<size_t>(offset + n * d.bytes));
  for (int64_t i = 0; i < n; ++i) std::memcpy(&out[offset + i * d.bytes], &fill, d.bytes);
  for (const auto& [i, bits] : set) std::memcpy(&out[offset + i * d.bytes], &bits, d.bytes);
  return out;
}

std::optional<NonFinite> Find(const DType& d, const std::vector<std::byte>& buf, int offset = 0) {
  return FindNonFinite(d.dtype, std::span<const std::byte>(buf).subspan(static_cast<size_t>(offset)));
}

TEST(FiniteCheckTest, FiniteValuesIncludingSubnormalsAndNegativeZeroPass) {
  for (const DType& d : kDTypes) {
    SCOPED_TRACE(StDTypeName(d.dtype));
    for (uint32_t v : {d.one, d.min_subnormal, d.max_subnormal, d.neg_zero, d.max_finite, d.max_finite | d.neg_zero,
                       0u}) {
      EXPECT_FALSE(Find(d, Make(d, 3000, v)).has_value()) << std::hex << v;
    }
    EXPECT_FALSE(Find(d, {}).has_value());
  }
}

TEST(FiniteCheckTest, EachKindIsFoundAndNamed) {
  for (const DType& d : kDTypes) {
    SCOPED_TRACE(StDTypeName(d.dtype));
    const std::pair<uint32_t, NonFiniteKind> cases[] = {
        {d.nan, NonFiniteKind::kNaN},
        {d.nan | d.neg_zero, NonFiniteKind::kNaN},      // negative NaN
        {d.pos_inf | 1u, NonFiniteKind::kNaN},          // signalling NaN: smallest mantissa
        {d.pos_inf, NonFiniteKind::kPositiveInfinity},
        {d.neg_inf, NonFiniteKind::kNegativeInfinity},
    };
    for (const auto& [bits, kind] : cases) {
      const std::optional<NonFinite> got = Find(d, Make(d, 100, d.one, {{17, bits}}));
      ASSERT_TRUE(got.has_value()) << std::hex << bits;
      EXPECT_EQ(got->index, 17);
      EXPECT_EQ(got->kind, kind) << std::hex << bits;
    }
  }
  EXPECT_EQ(NonFiniteName(NonFiniteKind::kNaN), "NaN");
  EXPECT_EQ(NonFiniteName(NonFiniteKind::kPositiveInfinity), "+Inf");
  EXPECT_EQ(NonFiniteName(NonFiniteKind::kNegativeInfinity), "-Inf");
}

// Positions in the first block, on block edges (the scan works in blocks of
// 1024 elements), deep inside and in the partial block at the end.
TEST(FiniteCheckTest, TheFirstBadIndexIsReportedWhereverItIs) {
  constexpr int64_t kN = 5000;
  for (const DType& d : kDTypes) {
    SCOPED_TRACE(StDTypeName(d.dtype));
    for (int64_t at : {int64_t{0}, int64_t{1}, int64_t{1023}, int64_t{1024}, int64_t{1025}, int64_t{2047},
                       int64_t{3000}, int64_t{4095}, int64_t{4096}, int64_t{4097}, kN - 1}) {
      SCOPED_TRACE(at);
      // A later NaN and -Inf in the same and later blocks do not hide the first.
      const std::optional<NonFinite> got =
          Find(d, Make(d, kN, d.one, {{at, d.pos_inf}, {std::min(at + 1, kN - 1), d.nan}, {kN - 1, d.neg_inf}}));
      ASSERT_TRUE(got.has_value());
      EXPECT_EQ(got->index, at);
      EXPECT_EQ(got->kind, at == kN - 1 ? NonFiniteKind::kNegativeInfinity : NonFiniteKind::kPositiveInfinity);
    }
  }
}

TEST(FiniteCheckTest, UnalignedDataIsReadInPlace) {
  for (const DType& d : kDTypes) {
    SCOPED_TRACE(StDTypeName(d.dtype));
    for (int offset = 1; offset < 8; ++offset) {
      SCOPED_TRACE(offset);
      EXPECT_FALSE(Find(d, Make(d, 2000, d.max_subnormal, {}, offset), offset).has_value());
      const std::optional<NonFinite> got = Find(d, Make(d, 2000, d.one, {{1500, d.nan}}, offset), offset);
      ASSERT_TRUE(got.has_value());
      EXPECT_EQ(got->index, 1500);
      EXPECT_EQ(got->kind, NonFiniteKind::kNaN);
    }
  }
}

TEST(FiniteCheckTest, OtherDtypesAreNotExamined) {
  // 0xFF bytes would be NaN in every float format.
  const std::vector<std::byte> ones(64, std::byte{0xFF});
  for (StDType t : {StDType::kI32, StDType::kU8, StDType::kI64, StDType::kF64, StDType::kBool}) {
    EXPECT_FALSE(FindNonFinite(t, ones).has_value()) << StDTypeName(t);
  }
}

TEST(FiniteCheckTest, CheckFiniteNamesTheFileTheTensorAndTheIndex) {
  const DType& f16 = kDTypes[1];
  const std::vector<std::byte> good = Make(kDTypes[0], 6, kDTypes[0].one);
  const std::vector<std::byte> bad = Make(f16, 40, f16.one, {{33, f16.neg_inf}, {35, f16.nan}});
  auto view = [](const std::vector<std::byte>& b) {
    return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
  };
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::FromBytes(
      SerializeSafetensors({{"good", StDType::kF32, {2, 3}, view(good)}, {"bad.weight", StDType::kF16, {4, 10},
                                                                          view(bad)}}),
      "dir/weights.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_TRUE(CheckFinite(**f, *(*f)->Find("good")).ok());
  const absl::Status s = CheckFinite(**f, *(*f)->Find("bad.weight"));
  EXPECT_TRUE(IsError(s, absl::StatusCode::kInvalidArgument, {}));
  EXPECT_EQ(s.message(), "dir/weights.safetensors: tensor 'bad.weight' holds -Inf at index 33");
}

}  // namespace
}  // namespace adapterd::model
