// Adapter weights reach the device beside the model's steps, not between them.
#ifndef ADAPTERD_SERVER_MODEL_DEVICE_UPLOAD_H_
#define ADAPTERD_SERVER_MODEL_DEVICE_UPLOAD_H_

#include <c10/core/Device.h>
#include <c10/core/Stream.h>

#include <optional>

#include "absl/status/status.h"

namespace adapterd::model {

// While a DeviceUploadScope lives, the tensors its thread builds on a CUDA
// `device` are copied and computed on a stream of their own (one of
// LibTorch's pool, which does not synchronise with the default stream the
// model's steps run on), so that loading an adapter never stalls a running
// step; host tensors bound there should be pinned and copied with
// non_blocking (PinnedForDevice). Finish() blocks the calling thread, never
// the model's, until everything enqueued on that stream has run: weights
// published after it are complete when a step reads them. On the CPU it
// does nothing.
//
// Freeing: weights are freed only after the last step that read them has
// synchronised with the host (the engine copies each step's sampled ids to
// the host before it releases a lease), so memory freed to this stream is
// never reused while the default stream still reads it.
//
// One scope per thread at a time; not thread-safe. Restores the thread's
// previous stream when destroyed.
class DeviceUploadScope {
 public:
  explicit DeviceUploadScope(c10::Device device);
  ~DeviceUploadScope();
  DeviceUploadScope(const DeviceUploadScope&) = delete;
  DeviceUploadScope& operator=(const DeviceUploadScope&) = delete;

  // Waits for this scope's copies; an error names the device.
  absl::Status Finish();
  // Whether the scope has a stream of its own (a CUDA device).
  bool side_stream() const { return previous_.has_value(); }

 private:
  c10::Device device_;
  std::optional<c10::Stream> stream_, previous_;
};

// Whether host tensors bound for `device` should be pinned and copied with
// non_blocking (a CUDA device).
inline bool PinnedForDevice(c10::Device device) { return device.is_cuda(); }

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_DEVICE_UPLOAD_H_
