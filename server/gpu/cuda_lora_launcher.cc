// Built only with the CUDA kernels linked in (see cuda_lora_launcher.h);
// the CPU build compiles it without linking it, so that it never rots.
#include "server/gpu/cuda_lora_launcher.h"

#include "absl/strings/str_cat.h"
#include "server/gpu/lora_kernels.h"

namespace adapterd::gpu {
namespace {

absl::Status Check(int error, const char* what) {
  if (error == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA ", what, " launch failed: ", ErrorString(error)));
}

class CudaLoraLauncher : public LoraLauncher {
 public:
  bool host_memory() const override { return false; }
  absl::Status Shrink(const ShrinkArgs& a, const LaunchRows& rows) const override {
    return Check(rows.sgmv ? SgmvShrink(a, rows.segments, rows.num_segments, rows.max_rows, rows.stream)
                           : BgmvShrink(a, rows.row_slot, rows.rows, rows.stream),
                 "shrink");
  }
  absl::Status Expand(const ExpandArgs& a, const LaunchRows& rows) const override {
    return Check(rows.sgmv ? SgmvExpand(a, rows.segments, rows.num_segments, rows.max_rows, rows.stream)
                           : BgmvExpand(a, rows.row_slot, rows.rows, rows.stream),
                 "expand");
  }
};

}  // namespace

bool CudaKernelsBuilt() { return true; }

absl::StatusOr<std::unique_ptr<LoraLauncher>> MakeCudaLoraLauncher() {
  return std::make_unique<CudaLoraLauncher>();
}

}  // namespace adapterd::gpu
