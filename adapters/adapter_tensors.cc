#include "adapters/adapter_tensors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "server/model/device_upload.h"
#include "server/model/finite_check.h"

namespace adapterd::adapters {

std::string ModuleName(int64_t layer, model::Proj p) {
  return absl::StrCat("model.layers.", layer, ".", std::string(model::ProjPath(p)));
}

absl::StatusOr<int64_t> ParseLayerIndex(const model::SafetensorsFile& f, const model::StTensorInfo& t,
                                        std::string_view digits, int64_t num_layers) {
  int64_t layer = 0;
  bool ok = !digits.empty() && digits.size() <= 18 && (digits[0] != '0' || digits.size() == 1);
  for (size_t i = 0; ok && i < digits.size(); ++i) {
    ok = digits[i] >= '0' && digits[i] <= '9';
    layer = layer * 10 + (digits[i] - '0');
  }
  if (ok && layer < num_layers) return layer;
  return absl::FailedPreconditionError(absl::StrCat(f.label(), ": tensor '", t.name, "': layer ",
                                                    absl::string_view(digits.data(), digits.size()),
                                                    " does not exist (the base has ", num_layers, " layers)"));
}

absl::Status CheckFloatTensor(const model::SafetensorsFile& f, const model::StTensorInfo& t) {
  if (t.dtype != model::StDType::kF32 && t.dtype != model::StDType::kF16 && t.dtype != model::StDType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(f.label(), ": tensor '", t.name, "': dtype ",
                                                   std::string(model::StDTypeName(t.dtype)),
                                                   " is not supported (F32, F16, BF16)"));
  }
  return model::CheckFinite(f, t);
}

absl::Status CheckShape(const model::SafetensorsFile& f, const model::StTensorInfo& t,
                        const std::vector<int64_t>& want) {
  if (t.shape == want) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(f.label(), ": tensor '", t.name, "': shape ",
                                                    model::ShapeString(t.shape), ", expected ", model::ShapeString(want)));
}

namespace {

// An owned CPU copy in the file's dtype; in pinned memory when `pinned`.
at::Tensor Copy(const model::SafetensorsFile& f, const model::StTensorInfo& info, bool pinned) {
  auto data = f.Data(info);
  c10::ScalarType t = info.dtype == model::StDType::kF32    ? at::kFloat
                      : info.dtype == model::StDType::kF16  ? at::kHalf
                                                            : at::kBFloat16;
  at::Tensor src = at::empty(info.shape, at::dtype(t).pinned_memory(pinned));
  std::memcpy(src.data_ptr(), data.data(), data.size());
  return src;
}

// dst[c * rows + r] = src[r * cols + c] for every element outside the
// rows [0, r0) x columns [0, c0) that the block loops below cover. `src` may
// be unaligned.
template <typename T>
void TransposeEdges(const std::byte* src, int64_t rows, int64_t cols, int64_t r0, int64_t c0, T* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = r < r0 ? c0 : 0; c < cols; ++c) {
      std::memcpy(dst + c * rows + r, src + (r * cols + c) * sizeof(T), sizeof(T));
    }
  }
}

#if defined(__SSE2__)
// 16-bit elements in 8x8 blocks (three rounds of unpacks), 32-bit in 4x4.
void TransposeInto(const std::byte* src, int64_t rows, int64_t cols, uint16_t* dst) {
  const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int64_t r = 0; r < r8; r += 8) {
    for (int64_t c = 0; c < c8; c += 8) {
      // The file's bytes are usually cold: fetch the next strip of rows
      // while this one is transposed (one prefetch per cache line).
      if (r + 8 < rows && c % 32 == 0) {
        for (int64_t i = r + 8; i < std::min(rows, r + 16); ++i) {
          _mm_prefetch(reinterpret_cast<const char*>(src + (i * cols + c) * 2), _MM_HINT_T0);
        }
      }
      __m128i a[8];
      for (int i = 0; i < 8; ++i) {
        a[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + ((r + i) * cols + c) * 2));
      }
      __m128i b[8], d[8];
      for (int i = 0; i < 4; ++i) {
        b[2 * i] = _mm_unpacklo_epi16(a[2 * i], a[2 * i + 1]);
        b[2 * i + 1] = _mm_unpackhi_epi16(a[2 * i], a[2 * i + 1]);
      }
      for (int i = 0; i < 2; ++i) {  // rows 4i..4i+3, columns 0-1, 2-3, 4-5, 6-7
        d[4 * i] = _mm_unpacklo_epi32(b[4 * i], b[4 * i + 2]);
        d[4 * i + 1] = _mm_unpackhi_epi32(b[4 * i], b[4 * i + 2]);
        d[4 * i + 2] = _mm_unpacklo_epi32(b[4 * i + 1], b[4 * i + 3]);
        d[4 * i + 3] = _mm_unpackhi_epi32(b[4 * i + 1], b[4 * i + 3]);
      }
      for (int i = 0; i < 4; ++i) {  // column 2i and 2i + 1, all 8 rows
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (c + 2 * i) * rows + r), _mm_unpacklo_epi64(d[i], d[4 + i]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (c + 2 * i + 1) * rows + r),
                         _mm_unpackhi_epi64(d[i], d[4 + i]));
      }
    }
  }
  TransposeEdges(src, rows, cols, r8, c8, dst);
}

void TransposeInto(const std::byte* src, int64_t rows, int64_t cols, uint32_t* dst) {
  const int64_t r4 = rows / 4 * 4, c4 = cols / 4 * 4;
  for (int64_t r = 0; r < r4; r += 4) {
    for (int64_t c = 0; c < c4; c += 4) {
      if (r + 4 < rows && c % 16 == 0) {  // as above
        for (int64_t i = r + 4; i < std::min(rows, r + 8); ++i) {
          _mm_prefetch(reinterpret_cast<const char*>(src + (i * cols + c) * 4), _MM_HINT_T0);
        }
      }
      __m128 a[4];
      for (int i = 0; i < 4; ++i) a[i] = _mm_loadu_ps(reinterpret_cast<const float*>(src + ((r + i) * cols + c) * 4));
      _MM_TRANSPOSE4_PS(a[0], a[1], a[2], a[3]);
      for (int i = 0; i < 4; ++i) _mm_storeu_ps(reinterpret_cast<float*>(dst + (c + i) * rows + r), a[i]);
    }
  }
  TransposeEdges(src, rows, cols, r4, c4, dst);
}
#else
template <typename T>
void TransposeInto(const std::byte* src, int64_t rows, int64_t cols, T* dst) {
  TransposeEdges(src, rows, cols, 0, 0, dst);
}
#endif

// An owned CPU copy of a 2-D tensor in the file's dtype, laid out
// column-major: its t() is contiguous. In pinned memory when `pinned`.
at::Tensor CopyColumnMajor(const model::SafetensorsFile& f, const model::StTensorInfo& info, bool pinned) {
  auto data = f.Data(info);
  const int64_t rows = info.shape[0], cols = info.shape[1];
  const bool f32 = info.dtype == model::StDType::kF32;
  c10::ScalarType t = f32 ? at::kFloat : info.dtype == model::StDType::kF16 ? at::kHalf : at::kBFloat16;
  at::Tensor transposed = at::empty({cols, rows}, at::dtype(t).pinned_memory(pinned));
  if (f32) {
    TransposeInto(data.data(), rows, cols, static_cast<uint32_t*>(transposed.data_ptr()));
  } else {
    TransposeInto(data.data(), rows, cols, static_cast<uint16_t*>(transposed.data_ptr()));
  }
  return transposed.t();
}

// `src`, made by Copy or CopyColumnMajor with pinned = PinnedForDevice, on
// the model's device in its dtype: on a GPU without blocking
// (DeviceUploadScope waits for the copies).
at::Tensor ToDevice(const at::Tensor& src, const model::ModelOptions& opts) {
  return src.to(opts.device, opts.dtype, /*non_blocking=*/model::PinnedForDevice(opts.device));
}

}  // namespace

at::Tensor ToTensor(const model::SafetensorsFile& f, const model::StTensorInfo& info,
                    const model::ModelOptions& opts) {
  return ToDevice(Copy(f, info, model::PinnedForDevice(opts.device)), opts);
}

at::Tensor ToLoraTensor(const model::SafetensorsFile& f, const model::StTensorInfo& info,
                        const model::ModelOptions& opts) {
  const bool pinned = model::PinnedForDevice(opts.device);
  at::Tensor src = info.shape.size() == 2 ? CopyColumnMajor(f, info, pinned) : Copy(f, info, pinned);
  const bool half = src.scalar_type() == at::kHalf || src.scalar_type() == at::kBFloat16;
  at::ScalarType want = opts.dtype;
  if (opts.device.is_cpu() && opts.lora_dtype != at::ScalarType::Undefined) {
    want = opts.lora_dtype;  // as if saved so (torch's rounding); off the CPU it is the model's
  } else if (opts.device.is_cpu() && half && opts.dtype == at::kFloat) {
    want = src.scalar_type();
  }
  // The layout is kept (column-major for 2-D); no copy when nothing changes.
  return src.to(opts.device, want, /*non_blocking=*/model::PinnedForDevice(opts.device));
}

absl::StatusOr<const model::StTensorInfo*> SoleTensor(const model::SafetensorsFile& f, const std::string& name,
                                                      const std::string& kind) {
  const model::StTensorInfo* t = f.Find(name);
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat(f.label(), ": missing tensor '", name, "'"));
  for (const model::StTensorInfo& other : f.tensors()) {
    if (other.name != name) {
      return absl::InvalidArgumentError(absl::StrCat(f.label(), ": unexpected tensor '", other.name, "' (", kind,
                                                     " holds only '", name, "')"));
    }
  }
  return t;
}

}  // namespace adapterd::adapters
