#include "server/model/device_upload.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "absl/strings/str_cat.h"
#include "server/common/torch_call.h"

namespace adapterd::model {

DeviceUploadScope::DeviceUploadScope(c10::Device device) : device_(device) {
  if (!device.is_cuda()) return;
  const c10::impl::DeviceGuardImplInterface* impl = c10::impl::getDeviceGuardImpl(device.type());
  stream_ = impl->getStreamFromGlobalPool(device, /*isHighPriority=*/false);
  previous_ = impl->exchangeStream(*stream_);
}

DeviceUploadScope::~DeviceUploadScope() {
  if (previous_.has_value()) c10::impl::getDeviceGuardImpl(device_.type())->exchangeStream(*previous_);
}

absl::Status DeviceUploadScope::Finish() {
  if (!stream_.has_value()) return absl::OkStatus();
  return TorchCall(absl::StrCat("waiting for an adapter's copies to ", device_.str()), [&] { stream_->synchronize(); });
}

}  // namespace adapterd::model
