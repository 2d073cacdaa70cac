#include "server/model/checkpoint.h"

#include <ATen/ATen.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/torch_call.h"
#include "server/model/finite_check.h"

namespace adapterd::model {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

absl::StatusOr<c10::ScalarType> TorchType(StDType t) {
  switch (t) {
    case StDType::kF32: return c10::ScalarType::Float;
    case StDType::kF16: return c10::ScalarType::Half;
    case StDType::kBF16: return c10::ScalarType::BFloat16;
    default: return absl::InvalidArgumentError(absl::StrCat(
        "dtype ", std::string(StDTypeName(t)), " is not supported for weights (F32, F16, BF16)"));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> names;
  std::map<std::string, std::string> expected;  // tensor -> shard, from the index
  if (fs::exists(single)) {  // transformers also prefers the single file
    names.push_back("model.safetensors");
  } else if (fs::exists(index)) {
    absl::StatusOr<std::string> text = ReadFileToString(index.string());
    if (!text.ok()) return text.status();
    json j = json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
        !j["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index.string(), ": not valid JSON with a 'weight_map' object"));
    }
    for (const auto& [tensor, file] : j["weight_map"].items()) {
      if (!file.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index.string(), ": weight_map['", tensor, "'] is not a file name"));
      }
      const std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f == ".." || f.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index.string(), ": shard name '", f, "' must be a plain file name"));
      }
      expected[tensor] = f;
      if (std::find(names.begin(), names.end(), f) == names.end()) names.push_back(f);
    }
    if (names.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index.string(), ": 'weight_map' names no tensors"));
    }
  } else if (fs::exists(fs::path(dir) / "pytorch_model.bin")) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": only pytorch_model.bin found; pickled checkpoints are not loaded, "
             "convert it to safetensors"));
  } else {
    return absl::NotFoundError(absl::StrCat(
        dir, ": no model.safetensors or model.safetensors.index.json"));
  }
  for (const std::string& name : names) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
        SafetensorsFile::Open((fs::path(dir) / name).string());
    if (!f.ok()) return f.status();
    for (const StTensorInfo& t : (*f)->tensors()) {
      if (ckpt->where_.contains(t.name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            (*f)->label(), ": tensor '", t.name, "' also appears in another shard"));
      }
      ckpt->where_[t.name] = ckpt->files_.size();
    }
    ckpt->files_.push_back(*std::move(f));
  }
  for (const auto& [tensor, file] : expected) {
    auto it = ckpt->where_.find(tensor);
    if (it == ckpt->where_.end() ||
        fs::path(ckpt->files_[it->second]->label()).filename() != file) {
      return absl::InvalidArgumentError(absl::StrCat(
          index.string(), ": tensor '", tensor, "' is not in shard '", file, "'"));
    }
  }
  return ckpt;
}

absl::StatusOr<at::Tensor> Checkpoint::Get(const std::string& name,
                                           const std::vector<int64_t>& shape,
                                           c10::ScalarType dtype, c10::Device device) {
  auto it = where_.find(name);
  if (it == where_.end()) {
    std::string files;
    for (const auto& f : files_) absl::StrAppend(&files, files.empty() ? "" : ", ", f->label());
    return absl::InvalidArgumentError(
        absl::StrCat(files, ": missing tensor '", name, "' (expected shape ",
                     ShapeString(shape), ")"));
  }
  used_[name] = true;
  const SafetensorsFile& file = *files_[it->second];
  const StTensorInfo& info = *file.Find(name);
  if (info.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.label(), ": tensor '", name, "' has shape ", ShapeString(info.shape),
        ", expected ", ShapeString(shape)));
  }
  absl::StatusOr<c10::ScalarType> src_type = TorchType(info.dtype);
  if (!src_type.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.label(), ": tensor '", name, "': ", src_type.status().message()));
  }
  if (absl::Status finite = CheckFinite(file, info); !finite.ok()) return finite;
  std::span<const std::byte> data = file.Data(info);
  std::shared_ptr<const void> owner = file.data_owner();
  return TorchCall(absl::StrCat(file.label(), ": tensor '", name, "'"), [&]() -> at::Tensor {
    const size_t elem = c10::elementSize(*src_type);
    void* ptr = const_cast<std::byte*>(data.data());
    at::Tensor view;
    if (reinterpret_cast<uintptr_t>(ptr) % elem == 0) {
      view = at::from_blob(ptr, shape, [owner](void*) {}, at::TensorOptions().dtype(*src_type));
    } else {  // unaligned data cannot be viewed in place
      view = at::empty(shape, at::TensorOptions().dtype(*src_type));
      std::memcpy(view.data_ptr(), ptr, data.size());
    }
    if (*src_type == dtype && device.is_cpu()) return view;  // zero-copy alias of the mapping
    return view.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
  });
}

std::vector<std::string> Checkpoint::UnusedNames() const {
  std::vector<std::string> out;
  for (const auto& [name, idx] : where_) {
    if (!used_.contains(name)) out.push_back(name);
  }
  return out;
}

void Checkpoint::Release(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) return;
  const SafetensorsFile& file = *files_[it->second];
  if (!file.mapped()) return;
  std::span<const std::byte> data = file.Data(*file.Find(name));
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data.data()) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data.data()) + data.size()) / page * page;
  // Only pages wholly inside the tensor; an unchanged private page is read
  // again from the file if touched, so this can never change what is read.
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void Checkpoint::Prefault() const {
  for (const auto& f : files_) {
    const absl::Time start = absl::Now();
    volatile uint8_t sink = 0;
    if (!f->tensors().empty()) {
      const std::byte* base = f->Data(f->tensors().front()).data();
      const uint64_t bytes = f->tensors().back().end;
      for (uint64_t off = 0; off < bytes; off += 4096) sink ^= static_cast<uint8_t>(base[off]);
    }
    (void)sink;
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    LOG(INFO) << "loaded " << f->label() << ": " << f->size_bytes() << " bytes in "
              << absl::StrFormat("%.2f s (%.0f MB/s)", secs,
                                 secs > 0 ? f->size_bytes() / secs / 1e6 : 0.0);
  }
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& f : files_) total += f->size_bytes();
  return total;
}

}  // namespace adapterd::model
