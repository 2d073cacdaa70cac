// DeviceUploadScope on the CPU: no stream of its own, the thread's tensors
// are made as without it, and Finish() has nothing to wait for. (Its CUDA
// side, a pool stream made current and synchronised by Finish(), needs a
// GPU: bench/gpu/run.sh's conformance loads every adapter through it.)
#include "server/model/device_upload.h"

#include <ATen/ATen.h>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

TEST(DeviceUploadScopeTest, OnTheCpuItChangesNothing) {
  DeviceUploadScope scope(c10::Device(c10::DeviceType::CPU));
  EXPECT_FALSE(scope.side_stream());
  const at::Tensor t = at::arange(4, at::kFloat).to(at::kCPU, at::kBFloat16);
  EXPECT_TRUE(scope.Finish().ok());
  EXPECT_EQ(t.scalar_type(), at::kBFloat16);
  EXPECT_FALSE(PinnedForDevice(c10::Device(c10::DeviceType::CPU)));
  EXPECT_TRUE(PinnedForDevice(c10::Device(c10::DeviceType::CUDA, 0)));
}

}  // namespace
}  // namespace adapterd::model
