// The model's view of one adapter: per-layer, per-projection deltas.
#ifndef ADAPTERD_SERVER_MODEL_ADAPTER_WEIGHTS_H_
#define ADAPTERD_SERVER_MODEL_ADAPTER_WEIGHTS_H_

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace adapterd::model {

// The seven linear projections of a decoder layer an adapter may target.
enum class Proj : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumProj = 7;
// "self_attn.q_proj", ..., "mlp.down_proj": the module path inside a layer.
std::string_view ProjPath(Proj p);
// "q_proj", ..., "down_proj".
std::string_view ProjName(Proj p);

// y += scale * (x A^T) B^T; with DoRA, y is also rescaled per output feature
// (PEFT: y + (m - 1) * (y - bias) + m * scale * x A^T B^T).
// A and B are stored transposed and contiguous (a_t = A^T, b_t = B^T), the
// layout the forward pass reads row by row; `a` and `b` are views of them in
// PEFT's orientation. Build one with LoraModule::FromPeft.
struct LoraModule {
  at::Tensor a_t;         // [in, r], contiguous
  at::Tensor b_t;         // [r, out], contiguous
  at::Tensor a;           // [r, in] view of a_t
  at::Tensor b;           // [out, r] view of b_t
  double scale = 1.0;     // lora_alpha / r, or / sqrt(r) with rsLoRA
  at::Tensor dora_scale;  // [out] = magnitude / ||W + scale B A||_row; undefined without DoRA
  int64_t rank() const { return a_t.size(1); }
  // From PEFT's lora_A [r, in] and lora_B [out, r].
  static LoraModule FromPeft(const at::Tensor& lora_a, const at::Tensor& lora_b, double scale);
};

// Immutable weights of one adapter, shared read-only by every sequence that
// uses it (the model never merges them into the base). Built once by a
// loader; thread-safe after that.
class AdapterWeights {
 public:
  explicit AdapterWeights(int64_t num_layers) : modules_(num_layers) {}

  const LoraModule* Find(int64_t layer, Proj p) const {
    const LoraModule& m = modules_[layer][static_cast<int>(p)];
    return m.a_t.defined() ? &m : nullptr;
  }
  void Set(int64_t layer, Proj p, LoraModule m) { modules_[layer][static_cast<int>(p)] = std::move(m); }
  int64_t num_layers() const { return static_cast<int64_t>(modules_.size()); }
  // Bytes held by the adapter's tensors.
  int64_t bytes() const;

 private:
  std::vector<std::array<LoraModule, kNumProj>> modules_;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_ADAPTER_WEIGHTS_H_
