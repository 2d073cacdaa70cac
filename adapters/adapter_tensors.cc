#include "adapters/adapter_tensors.h"

#include <ATen/ATen.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace adapterd::adapters {

std::string ShapeString(const std::vector<int64_t>& s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

bool ParseProj(const std::string& path, model::Proj* out) {
  for (int i = 0; i < model::kNumProj; ++i) {
    if (model::ProjPath(static_cast<model::Proj>(i)) == path) {
      *out = static_cast<model::Proj>(i);
      return true;
    }
  }
  return false;
}

std::string ModuleName(int64_t layer, model::Proj p) {
  return absl::StrCat("model.layers.", layer, ".", std::string(model::ProjPath(p)));
}

absl::Status CheckFloatDtype(const model::SafetensorsFile& f, const model::StTensorInfo& t) {
  if (t.dtype == model::StDType::kF32 || t.dtype == model::StDType::kF16 || t.dtype == model::StDType::kBF16) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(f.label(), ": tensor '", t.name, "': dtype ",
                                                 std::string(model::StDTypeName(t.dtype)),
                                                 " is not supported (F32, F16, BF16)"));
}

absl::Status CheckShape(const model::SafetensorsFile& f, const model::StTensorInfo& t,
                        const std::vector<int64_t>& want) {
  if (t.shape == want) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(f.label(), ": tensor '", t.name, "': shape ",
                                                    ShapeString(t.shape), ", expected ", ShapeString(want)));
}

namespace {

// An owned CPU copy in the file's dtype.
at::Tensor Copy(const model::SafetensorsFile& f, const model::StTensorInfo& info) {
  auto data = f.Data(info);
  c10::ScalarType t = info.dtype == model::StDType::kF32    ? at::kFloat
                      : info.dtype == model::StDType::kF16  ? at::kHalf
                                                            : at::kBFloat16;
  at::Tensor src = at::empty(info.shape, at::dtype(t));
  std::memcpy(src.data_ptr(), data.data(), data.size());
  return src;
}

}  // namespace

at::Tensor ToTensor(const model::SafetensorsFile& f, const model::StTensorInfo& info,
                    const model::ModelOptions& opts) {
  return Copy(f, info).to(opts.device, opts.dtype);
}

at::Tensor ToLoraTensor(const model::SafetensorsFile& f, const model::StTensorInfo& info,
                        const model::ModelOptions& opts) {
  at::Tensor src = Copy(f, info);
  const bool half = src.scalar_type() == at::kHalf || src.scalar_type() == at::kBFloat16;
  if (half && opts.dtype == at::kFloat && opts.device.is_cpu()) return src;
  return src.to(opts.device, opts.dtype);
}

}  // namespace adapterd::adapters
