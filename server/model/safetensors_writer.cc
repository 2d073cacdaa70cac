// Writing the safetensors format: the header as the reference writes it
// (dtype, shape and data_offsets per tensor, then the data in order),
// padded so that the data buffer starts at a multiple of 8.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/model/safetensors.h"
#include "server/model/safetensors_header.h"

namespace adapterd::model {
namespace {

using safetensors_internal::ByteSize;
using safetensors_internal::DTypeName;
using safetensors_internal::IsValidUtf8;
using safetensors_internal::kLengthBytes;
using safetensors_internal::kMetadataKey;
using safetensors_internal::Numel;
using safetensors_internal::Quote;

// Why `tensors` and `metadata` cannot be written, or "" when they can.
std::string WriteProblem(const std::vector<StTensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::unordered_set<std::string_view> names;
  for (const StTensorToWrite& t : tensors) {
    if (!IsValidUtf8(t.name)) {
      return absl::StrCat("tensor name ", Quote(t.name), " is not valid UTF-8");
    }
    if (t.name == kMetadataKey) return "a tensor may not be named '__metadata__'";
    if (!names.insert(t.name).second) return absl::StrCat("duplicate tensor name ", Quote(t.name));
    if (StDTypeBits(t.dtype) == 0) return absl::StrCat("tensor ", Quote(t.name), ": invalid dtype");
    int64_t numel = 0;
    if (!Numel(t.shape, &numel)) {
      return absl::StrCat("tensor ", Quote(t.name), ": shape ", ShapeString(t.shape),
                          " has a negative dimension or too many elements");
    }
    uint64_t bytes = 0;
    std::string why;
    if (!ByteSize(t.dtype, numel, &bytes, &why)) {
      return absl::StrCat("tensor ", Quote(t.name), ": ", DTypeName(t.dtype), " ",
                          ShapeString(t.shape), " ", why);
    }
    if (t.bytes.size() != bytes) {
      return absl::StrCat("tensor ", Quote(t.name), ": ", t.bytes.size(), " bytes given but ",
                          DTypeName(t.dtype), " ", ShapeString(t.shape), " needs ", bytes);
    }
  }
  for (const auto& [k, v] : metadata) {
    if (!IsValidUtf8(k) || !IsValidUtf8(v)) {
      return absl::StrCat("__metadata__ entry ", Quote(k), " is not valid UTF-8");
    }
  }
  return "";
}

// The 8-byte length followed by the JSON header, padded with spaces so that
// the data buffer starts at a multiple of 8.
std::string EncodeHeader(const std::vector<StTensorToWrite>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header[std::string(kMetadataKey)] = std::move(m);
  }
  uint64_t offset = 0;
  for (const StTensorToWrite& t : tensors) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(StDTypeName(t.dtype));
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + t.bytes.size()};
    offset += t.bytes.size();
    header[t.name] = std::move(entry);
  }
  // `replace` keeps dump() from throwing on invalid UTF-8 (WriteSafetensors
  // rejects it first; SerializeSafetensors has no way to report it).
  std::string text = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(kLengthBytes, '\0');
  uint64_t n = text.size();
  for (size_t i = 0; i < kLengthBytes; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  out += text;
  return out;
}

absl::Status WriteAll(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, what);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

}  // namespace

std::string SerializeSafetensors(const std::vector<StTensorToWrite>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  std::string out = EncodeHeader(tensors, metadata);
  size_t total = out.size();
  for (const StTensorToWrite& t : tensors) total += t.bytes.size();
  out.reserve(total);
  for (const StTensorToWrite& t : tensors) out.append(t.bytes);
  return out;
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<StTensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  if (std::string problem = WriteProblem(tensors, metadata); !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
  }
  // Every message starts with `path`.
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot create ", tmp));
  const std::string writing = absl::StrCat(path, ": cannot write ", tmp);
  absl::Status s = WriteAll(fd, EncodeHeader(tensors, metadata), writing);
  for (size_t i = 0; s.ok() && i < tensors.size(); ++i) s = WriteAll(fd, tensors[i].bytes, writing);
  if (s.ok() && ::fsync(fd) != 0) {
    s = absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot fsync ", tmp));
  }
  if (::close(fd) != 0 && s.ok()) {
    s = absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot close ", tmp));
  }
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot rename ", tmp, " over it"));
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  // Make the rename itself durable (best effort).
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace adapterd::model
