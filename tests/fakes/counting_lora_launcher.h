// A LoraLauncher that counts its launches and passes them to the kernels'
// host version.
#ifndef ADAPTERD_TESTS_FAKES_COUNTING_LORA_LAUNCHER_H_
#define ADAPTERD_TESTS_FAKES_COUNTING_LORA_LAUNCHER_H_

#include "server/gpu/host_lora_launcher.h"
#include "server/gpu/lora_launcher.h"

namespace adapterd::testing {

// Adds one to `*launches` per Shrink or Expand; `launches` outlives it.
class CountingLoraLauncher : public gpu::LoraLauncher {
 public:
  explicit CountingLoraLauncher(int* launches) : launches_(launches) {}
  bool host_memory() const override { return true; }
  absl::Status Shrink(const gpu::ShrinkArgs& a, const gpu::LaunchRows& rows) const override {
    ++*launches_;
    return host_.Shrink(a, rows);
  }
  absl::Status Expand(const gpu::ExpandArgs& a, const gpu::LaunchRows& rows) const override {
    ++*launches_;
    return host_.Expand(a, rows);
  }

 private:
  int* launches_;
  gpu::HostLoraLauncher host_;
};

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_FAKES_COUNTING_LORA_LAUNCHER_H_
