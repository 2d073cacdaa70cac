// Reading the safetensors format (huggingface/safetensors): the file's
// bytes, mapped or owned, checked as the reference checks them. The header
// parser is in safetensors_header.cc, the writer in safetensors_writer.cc.

#include "server/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/model/safetensors_header.h"

namespace adapterd::model {
namespace {

using safetensors_internal::kLengthBytes;
using safetensors_internal::Numel;
using safetensors_internal::Quote;
using safetensors_internal::RangeString;

struct DTypeRow {
  StDType dtype;
  std::string_view name;
  int bits;
};

// In enum order, so that kDTypes[static_cast<int>(d)].dtype == d.
constexpr DTypeRow kDTypes[] = {
    {StDType::kBool, "BOOL", 8},
    {StDType::kU8, "U8", 8},
    {StDType::kI8, "I8", 8},
    {StDType::kI16, "I16", 16},
    {StDType::kU16, "U16", 16},
    {StDType::kF16, "F16", 16},
    {StDType::kBF16, "BF16", 16},
    {StDType::kI32, "I32", 32},
    {StDType::kU32, "U32", 32},
    {StDType::kF32, "F32", 32},
    {StDType::kF64, "F64", 64},
    {StDType::kI64, "I64", 64},
    {StDType::kU64, "U64", 64},
    {StDType::kC64, "C64", 64},
    {StDType::kF8E5M2, "F8_E5M2", 8},
    {StDType::kF8E4M3, "F8_E4M3", 8},
    {StDType::kF8E8M0, "F8_E8M0", 8},
    {StDType::kF8E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {StDType::kF8E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {StDType::kF4, "F4", 4},
    {StDType::kF6E2M3, "F6_E2M3", 6},
    {StDType::kF6E3M2, "F6_E3M2", 6},
};
constexpr size_t kNumDTypes = sizeof(kDTypes) / sizeof(kDTypes[0]);

const DTypeRow* Row(StDType dtype) {
  const auto i = static_cast<size_t>(dtype);
  return i < kNumDTypes ? &kDTypes[i] : nullptr;
}

}  // namespace

bool ParseStDType(std::string_view name, StDType* out) {
  for (const DTypeRow& row : kDTypes) {
    if (row.name == name) {
      *out = row.dtype;
      return true;
    }
  }
  return false;
}

std::string_view StDTypeName(StDType dtype) {
  const DTypeRow* row = Row(dtype);
  return row ? row->name : std::string_view("INVALID");
}

int StDTypeBits(StDType dtype) {
  const DTypeRow* row = Row(dtype);
  return row ? row->bits : 0;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t StTensorInfo::numel() const {
  int64_t n = 0;
  return Numel(shape, &n) ? n : -1;
}

SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path, const SafetensorsLimits& limits) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, absl::StrCat(path, ": cannot stat"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->label_ = path;
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > 0) {
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::ErrnoToStatus(err, absl::StrCat(path, ": cannot mmap ", size, " bytes"));
    }
    file->owner_ = std::shared_ptr<const void>(
        addr, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
    file->base_ = static_cast<const std::byte*>(addr);
    file->size_ = size;
    file->mapped_ = true;
  }
  ::close(fd);  // the mapping stays valid
  if (absl::Status s = file->Parse(limits); !s.ok()) return s;
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    std::string bytes, std::string label, const SafetensorsLimits& limits) {
  return FromSharedBytes(std::make_shared<const std::string>(std::move(bytes)), std::move(label), limits);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromSharedBytes(
    std::shared_ptr<const std::string> bytes, std::string label, const SafetensorsLimits& limits) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->label_ = std::move(label);
  file->base_ = reinterpret_cast<const std::byte*>(bytes->data());
  file->size_ = bytes->size();
  file->owner_ = std::shared_ptr<const void>(bytes, bytes->data());
  if (absl::Status s = file->Parse(limits); !s.ok()) return s;
  return file;
}

absl::Status SafetensorsFile::Parse(const SafetensorsLimits& limits) {
  auto fail = [this](absl::string_view message) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": ", message));
  };
  if (size_ < kLengthBytes) {
    return fail(absl::StrCat("file is ", size_, " bytes, too small for the 8-byte header length"));
  }
  uint64_t n = 0;
  for (size_t i = 0; i < kLengthBytes; ++i) {
    n |= static_cast<uint64_t>(std::to_integer<uint8_t>(base_[i])) << (8 * i);
  }
  if (n > limits.max_header_bytes) {
    return fail(absl::StrCat("header length ", n, " exceeds the limit of ",
                             limits.max_header_bytes, " bytes"));
  }
  if (n > size_ - kLengthBytes) {
    return fail(absl::StrCat("header length ", n, " runs past the end of the file (", size_,
                             " bytes, so at most ", size_ - kLengthBytes, ")"));
  }
  const char* header = reinterpret_cast<const char*>(base_ + kLengthBytes);
  if (n == 0 || header[0] != '{') {
    return fail("header does not start with '{'");
  }
  // nlohmann's lexer takes a NUL byte for the end of input and would accept
  // anything after it; JSON text never contains one (strings escape it).
  if (const void* nul = std::memchr(header, '\0', n); nul != nullptr) {
    return fail(absl::StrCat("header is not valid JSON: NUL byte at offset ",
                             static_cast<const char*>(nul) - header));
  }
  buffer_ = base_ + kLengthBytes + n;
  buffer_size_ = size_ - kLengthBytes - n;

  std::vector<StTensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  if (std::string why = safetensors_internal::ParseHeader(std::string_view(header, n), limits, &tensors, &metadata);
      !why.empty()) {
    return fail(why);
  }

  // Ties (empty tensors) in name order, so that the order is deterministic.
  std::sort(tensors.begin(), tensors.end(), [](const StTensorInfo& a, const StTensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Exactly as the reference: sorted by offsets, each tensor starts where the
  // previous one ended and the last one ends at the end of the buffer.
  uint64_t cursor = 0;
  const StTensorInfo* previous = nullptr;
  for (const StTensorInfo& t : tensors) {
    if (t.end > buffer_size_) {
      return fail(absl::StrCat("tensor ", Quote(t.name), ": data_offsets ",
                               RangeString(t.begin, t.end), " run past the end of the ",
                               buffer_size_, "-byte data buffer"));
    }
    if (t.begin < cursor) {
      return fail(absl::StrCat("tensor ", Quote(t.name), ": data_offsets ",
                               RangeString(t.begin, t.end), " overlap tensor ",
                               Quote(previous->name), " at ",
                               RangeString(previous->begin, previous->end)));
    }
    if (t.begin > cursor) {
      return fail(absl::StrCat("hole in the data buffer: bytes ", RangeString(cursor, t.begin),
                               " belong to no tensor (before tensor ", Quote(t.name), ")"));
    }
    cursor = t.end;
    previous = &t;
  }
  if (cursor != buffer_size_) {
    return fail(absl::StrCat("data buffer has ", buffer_size_ - cursor, " trailing bytes ",
                             RangeString(cursor, buffer_size_), " that belong to no tensor"));
  }

  tensors_ = std::move(tensors);
  metadata_ = std::move(metadata);
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  return absl::OkStatus();
}

const StTensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::span<const std::byte> SafetensorsFile::Data(const StTensorInfo& info) const {
  if (info.begin > info.end || info.end > buffer_size_) return {};
  return {buffer_ + info.begin, static_cast<size_t>(info.end - info.begin)};
}

}  // namespace adapterd::model
