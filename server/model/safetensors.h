// Reading and writing the safetensors format (huggingface/safetensors).
#ifndef ADAPTERD_SERVER_MODEL_SAFETENSORS_H_
#define ADAPTERD_SERVER_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace adapterd::model {

// Element types of the format. Only F32, F16 and BF16 are turned into model
// weights; the others are parsed and validated so that any valid file opens.
enum class StDType {
  kBool, kU8, kI8, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kF64, kI64, kU64,
  kC64, kF8E5M2, kF8E4M3, kF8E8M0, kF8E4M3FNUZ, kF8E5M2FNUZ, kF4, kF6E2M3, kF6E3M2,
};

// Parses "F32", "BF16", ... Returns false for an unknown name.
bool ParseStDType(std::string_view name, StDType* out);
std::string_view StDTypeName(StDType dtype);
// Width of one element in bits (4 for F4, 6 for F6_*).
int StDTypeBits(StDType dtype);

// "[2, 3]": a shape as error messages print it.
std::string ShapeString(const std::vector<int64_t>& shape);

struct StTensorInfo {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data buffer, [begin, end)
  uint64_t end = 0;
  int64_t numel() const;
};

struct SafetensorsLimits {
  uint64_t max_header_bytes = 100'000'000;  // the reference reader's cap
  uint64_t max_tensors = 1'000'000;
};

// A validated safetensors file held in memory: either an mmap of a file or an
// owned buffer. Open() checks the whole header (size cap, JSON, dtypes,
// shapes, offsets that cover the buffer without holes or overlaps, no
// duplicate names) so that every tensor it lists can be read safely.
// Immutable after creation, hence thread-safe. Tensors built on top of its
// bytes must keep the file alive (see data_owner()).
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path, const SafetensorsLimits& limits = {});
  // Parses an in-memory copy; `label` names it in error messages.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(
      std::string bytes, std::string label, const SafetensorsLimits& limits = {});
  // Parses bytes shared with their other owners, without copying them; the
  // file keeps them alive (and they must not change while it does).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromSharedBytes(
      std::shared_ptr<const std::string> bytes, std::string label, const SafetensorsLimits& limits = {});

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& label() const { return label_; }
  // Tensors in file order of their data offsets.
  const std::vector<StTensorInfo>& tensors() const { return tensors_; }
  const StTensorInfo* Find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::span<const std::byte> Data(const StTensorInfo& info) const;
  uint64_t size_bytes() const { return size_; }
  // Whether the bytes are a read-only private mapping of the file (Open), so
  // that pages nobody reads any more can be dropped and read again on demand.
  bool mapped() const { return mapped_; }
  // Keeps the underlying bytes alive; share it with tensors that alias them.
  std::shared_ptr<const void> data_owner() const { return owner_; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse(const SafetensorsLimits& limits);

  std::string label_;
  std::shared_ptr<const void> owner_;
  const std::byte* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  const std::byte* buffer_ = nullptr;  // start of the data buffer
  uint64_t buffer_size_ = 0;
  std::vector<StTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: raw little-endian row-major bytes.
struct StTensorToWrite {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  std::string_view bytes;
};

// Serialises tensors into the format (header padded to a multiple of 8).
std::string SerializeSafetensors(const std::vector<StTensorToWrite>& tensors,
                                 const std::map<std::string, std::string>& metadata = {});
// Writes atomically: a temporary file in the same directory, then rename.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<StTensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_SAFETENSORS_H_
