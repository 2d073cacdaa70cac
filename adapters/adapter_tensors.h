// Helpers the adapter loaders share for reading tensors from safetensors
// files into the base model's dtype and device.
#ifndef ADAPTERD_ADAPTERS_ADAPTER_TENSORS_H_
#define ADAPTERD_ADAPTERS_ADAPTER_TENSORS_H_

#include <ATen/core/Tensor.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"

namespace adapterd::adapters {

// "model.layers.<layer>.<path>", the module name PEFT matches targets against.
std::string ModuleName(int64_t layer, model::Proj p);

// The index of a base layer that `digits` (the decimal number in tensor
// `t`'s name) spells. FAILED_PRECONDITION "<file>: tensor '<name>': layer
// <digits> does not exist (the base has <n> layers)" unless `digits` is a
// plain decimal number (no sign, no leading zero) below `num_layers`.
absl::StatusOr<int64_t> ParseLayerIndex(const model::SafetensorsFile& f, const model::StTensorInfo& t,
                                        std::string_view digits, int64_t num_layers);

// INVALID_ARGUMENT unless the tensor is F32, F16 or BF16 and every value is
// finite; a NaN or an infinity is named with its first flat index (see
// model::CheckFinite). Reads every byte of the tensor once: loaders call it
// once per tensor, on the loader thread, before building anything.
absl::Status CheckFloatTensor(const model::SafetensorsFile& f, const model::StTensorInfo& t);

// INVALID_ARGUMENT unless `name` is the file's only tensor ("missing
// tensor", or "unexpected tensor" naming the first other one and saying
// that `kind` holds only `name`). Returns it.
absl::StatusOr<const model::StTensorInfo*> SoleTensor(const model::SafetensorsFile& f, const std::string& name,
                                                      const std::string& kind);

// FAILED_PRECONDITION "<file>: tensor '<name>': shape [..], expected [..]"
// unless the shape is `want`.
absl::Status CheckShape(const model::SafetensorsFile& f, const model::StTensorInfo& t,
                        const std::vector<int64_t>& want);

// An owned copy of the tensor (the file may go away) in the base's dtype and
// device. May throw (call inside TorchCall).
at::Tensor ToTensor(const model::SafetensorsFile& f, const model::StTensorInfo& info,
                    const model::ModelOptions& opts);

// For LoRA's A and B: like ToTensor, except that an F16 or BF16 tensor keeps
// its dtype when the base is fp32 on the CPU. The forward pass widens such
// weights exactly as it reads them, so the result is the same while the
// adapter holds, and each step reads, half the bytes. A 2-D tensor comes
// back column-major (its t() is contiguous), the layout LoraModule keeps, so
// building the module copies nothing more. With opts.lora_dtype set, on the
// CPU the tensor is in that dtype whatever the file's. May throw.
at::Tensor ToLoraTensor(const model::SafetensorsFile& f, const model::StTensorInfo& info,
                        const model::ModelOptions& opts);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_ADAPTER_TENSORS_H_
