#include "server/model/finite_check.h"

#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace adapterd::model {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; FindNonFinite reads it in place");

// An IEEE binary format stored in U: all exponent bits set means NaN (a
// non-zero mantissa) or an infinity.
template <typename U, U kExponent, U kSign>
struct Format {
  using Bits = U;
  static constexpr U exponent = kExponent;
  static constexpr U sign = kSign;
  static constexpr U exponent_low = kExponent & static_cast<U>(~(kExponent - 1));  // its lowest bit
};
using F32 = Format<uint32_t, 0x7F800000u, 0x80000000u>;
using F16 = Format<uint16_t, 0x7C00u, 0x8000u>;
using BF16 = Format<uint16_t, 0x7F80u, 0x8000u>;

template <typename F>
typename F::Bits Load(const std::byte* p) {
  typename F::Bits v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The exponent field plus its lowest bit carries into the sign bit exactly
// when every exponent bit is set: the sign bit of the result says whether
// `v` is NaN or infinite, with only and, add and or (which vectorise in the
// element's own width).
template <typename F>
typename F::Bits NonFiniteBit(typename F::Bits v) {
  return static_cast<typename F::Bits>((v & F::exponent) + F::exponent_low);
}

// Blocks of a fixed size hold no early exit, so the compiler vectorises the
// test; the block that holds a bad element is scanned again one by one.
template <typename F>
std::optional<NonFinite> Scan(const std::byte* data, int64_t n) {
  using U = typename F::Bits;
  constexpr int64_t kSize = sizeof(U);
  constexpr int64_t kBlock = 1024;
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    const std::byte* block = data + i * kSize;
    U any = 0;
    for (int64_t j = 0; j < kBlock; ++j) any |= NonFiniteBit<F>(Load<F>(block + j * kSize));
    if ((any & F::sign) != 0) break;
  }
  for (; i < n; ++i) {
    const U v = Load<F>(data + i * kSize);
    if ((NonFiniteBit<F>(v) & F::sign) == 0) continue;
    const NonFiniteKind kind = (v & static_cast<U>(~(F::exponent | F::sign))) != 0 ? NonFiniteKind::kNaN
                               : (v & F::sign) != 0                                ? NonFiniteKind::kNegativeInfinity
                                                                                   : NonFiniteKind::kPositiveInfinity;
    return NonFinite{i, kind};
  }
  return std::nullopt;
}

}  // namespace

std::string_view NonFiniteName(NonFiniteKind kind) {
  switch (kind) {
    case NonFiniteKind::kNaN: return "NaN";
    case NonFiniteKind::kPositiveInfinity: return "+Inf";
    case NonFiniteKind::kNegativeInfinity: return "-Inf";
  }
  return "a non-finite value";
}

std::optional<NonFinite> FindNonFinite(StDType dtype, std::span<const std::byte> data) {
  switch (dtype) {
    case StDType::kF32: return Scan<F32>(data.data(), static_cast<int64_t>(data.size() / 4));
    case StDType::kF16: return Scan<F16>(data.data(), static_cast<int64_t>(data.size() / 2));
    case StDType::kBF16: return Scan<BF16>(data.data(), static_cast<int64_t>(data.size() / 2));
    default: return std::nullopt;
  }
}

absl::Status CheckFinite(const SafetensorsFile& f, const StTensorInfo& t) {
  const std::optional<NonFinite> bad = FindNonFinite(t.dtype, f.Data(t));
  if (!bad) return absl::OkStatus();
  const std::string_view what = NonFiniteName(bad->kind);
  return absl::InvalidArgumentError(absl::StrCat(f.label(), ": tensor '", t.name, "' holds ",
                                                 absl::string_view(what.data(), what.size()), " at index ",
                                                 bad->index));
}

}  // namespace adapterd::model
