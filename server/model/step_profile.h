// Where one forward step's time goes.
#ifndef ADAPTERD_SERVER_MODEL_STEP_PROFILE_H_
#define ADAPTERD_SERVER_MODEL_STEP_PROFILE_H_

#include <chrono>

namespace adapterd::model {

// Seconds a forward pass spent in the base model's matrix products (the
// projections and the LM head), in attention (RoPE, KV writes and reads,
// the attention itself), and in adapter work (LoRA, IA3, bottleneck and
// LLaMA-Adapter deltas). The rest of the pass (embedding, norms,
// activations, residuals) is what the caller's total leaves. Filled by one
// forward pass on one thread; a plain value.
struct StepProfile {
  double gemm = 0;
  double attention = 0;
  double adapters = 0;
};

// Adds the wall time from its construction to its destruction to `*into`;
// does nothing when `into` is null. A clock read at each end (tens of
// nanoseconds), cheap enough to run on every step.
class ScopedTimer {
 public:
  explicit ScopedTimer(double* into)
      : into_(into), start_(into != nullptr ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point()) {}
  ~ScopedTimer() {
    if (into_ != nullptr) *into_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  double* const into_;
  const std::chrono::steady_clock::time_point start_;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_STEP_PROFILE_H_
