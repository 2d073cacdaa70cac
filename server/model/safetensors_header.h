// Internals shared by safetensors.cc and safetensors_writer.cc: the
// header parser and the error-message helpers. Not part of the model
// library's interface; include safetensors.h instead.
#ifndef ADAPTERD_SERVER_MODEL_SAFETENSORS_HEADER_H_
#define ADAPTERD_SERVER_MODEL_SAFETENSORS_HEADER_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/model/safetensors.h"

namespace adapterd::model::safetensors_internal {

inline constexpr uint64_t kLengthBytes = 8;  // the little-endian u64 header length
inline constexpr std::string_view kMetadataKey = "__metadata__";

// Parses the JSON header `text` (the bytes after the length, without a NUL
// byte) into `tensors` (in file order) and `metadata`, checking every value
// against the format and `limits` as it arrives. Returns "" on success, or
// why the header is bad (naming the tensor, field or key). Linear in the
// header's size; never throws on bad input.
std::string ParseHeader(std::string_view text, const SafetensorsLimits& limits, std::vector<StTensorInfo>* tensors,
                        std::map<std::string, std::string>* metadata);

// The dtype's name as abseil's string_view.
absl::string_view DTypeName(StDType dtype);
bool IsValidUtf8(std::string_view s);
// Quotes a name for an error message: control characters and quotes escaped,
// valid UTF-8 kept, very long names shortened.
std::string Quote(std::string_view name);
// "[begin, end)".
std::string RangeString(uint64_t begin, uint64_t end);
// Bytes that `numel` elements of `dtype` occupy; false with a reason when the
// count overflows or is not a whole number of bytes.
bool ByteSize(StDType dtype, int64_t numel, uint64_t* bytes, std::string* why);
// Product of the dimensions, false when it does not fit in int64_t.
bool Numel(const std::vector<int64_t>& shape, int64_t* out);

}  // namespace adapterd::model::safetensors_internal

#endif  // ADAPTERD_SERVER_MODEL_SAFETENSORS_HEADER_H_
