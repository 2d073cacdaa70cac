// Safetensors files made by hand for the reader's tests, and an assertion
// on the reader's errors.
#ifndef ADAPTERD_TESTS_SUPPORT_SAFETENSORS_BYTES_H_
#define ADAPTERD_TESTS_SUPPORT_SAFETENSORS_BYTES_H_

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "server/model/safetensors.h"

namespace adapterd::model::safetensors_test {

inline constexpr char kLabel[] = "/p/model.safetensors";

inline std::string Le64(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out;
}

// A file made by hand: the length of `header`, `header`, then `data`.
inline std::string Bytes(std::string_view header, std::string_view data = "") {
  std::string out = Le64(header.size());
  out.append(header);
  out.append(data);
  return out;
}

template <typename T>
std::string Raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

template <typename T>
std::vector<T> Values(std::span<const std::byte> bytes) {
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

inline absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(std::string bytes,
                                                              const SafetensorsLimits& limits = {}) {
  return SafetensorsFile::FromBytes(std::move(bytes), kLabel, limits);
}

// Asserts INVALID_ARGUMENT whose message starts with `label` and contains
// every one of `parts`.
inline ::testing::AssertionResult IsInvalid(const absl::StatusOr<std::unique_ptr<SafetensorsFile>>& r,
                                            const std::vector<std::string>& parts,
                                            const std::string& label = kLabel) {
  if (r.ok()) return ::testing::AssertionFailure() << "parsed, but should have failed";
  const absl::Status& s = r.status();
  if (s.code() != absl::StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "code is not INVALID_ARGUMENT: " << s;
  }
  if (!absl::StartsWith(s.message(), label + ": ")) {
    return ::testing::AssertionFailure() << "message does not start with '" << label << ": ': " << s;
  }
  for (const std::string& p : parts) {
    if (!absl::StrContains(s.message(), p)) {
      return ::testing::AssertionFailure() << "message lacks '" << p << "': " << s;
    }
  }
  return ::testing::AssertionSuccess() << s;
}

}  // namespace adapterd::model::safetensors_test

#endif  // ADAPTERD_TESTS_SUPPORT_SAFETENSORS_BYTES_H_
