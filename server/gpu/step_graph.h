// CUDA graphs of a model step, and the stream the step's own kernels join.
#ifndef ADAPTERD_SERVER_GPU_STEP_GRAPH_H_
#define ADAPTERD_SERVER_GPU_STEP_GRAPH_H_

#include <c10/core/Device.h>

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "server/gpu/lora_kernels.h"

namespace adapterd::gpu {

// A StepGraph is device work captured once and run again by Replay() on
// the device's current stream: the same kernels, reading and writing the
// same addresses as during the capture. Whoever captured it keeps those
// addresses alive and valid (inputs written before a replay, outputs read
// after it) for as long as the graph lives; the temporaries of the
// captured work live in the graph's own memory pool. Not thread-safe: one
// thread replays a graph at a time.
class StepGraph {
 public:
  virtual ~StepGraph() = default;
  virtual void Replay() = 0;
};

// Whether this build can capture graphs (a build against a CUDA LibTorch,
// bench/gpu/bundle.sh); CaptureStepGraph() fails everywhere else.
bool StepGraphsBuilt();

// Captures the device work `body` enqueues on `device`, on a side stream,
// after waiting for the current stream to finish. Nothing of it runs: run `body`
// once beforehand (it warms up libraries that allocate on first use, which
// a capture must not). `body` must not synchronise with the host, copy
// from pageable host memory or read a tensor's value on the host.
// UNIMPLEMENTED when the build has no graphs or `device` is not CUDA;
// INTERNAL naming the failure when the capture fails.
//
// With `share_memory_with`, the new graph's temporaries come from that
// graph's pool: graphs that share one take the memory of the largest,
// not of all of them together. That is safe when they are replayed one at
// a time on one stream and what a replay writes outside its inputs is
// read before the next replay of any of them.
absl::StatusOr<std::unique_ptr<StepGraph>> CaptureStepGraph(c10::Device device, const std::function<void()>& body,
                                                            const StepGraph* share_memory_with = nullptr);

// The stream LibTorch's operations on `device` use now (the capture's side
// stream while a capture runs): the stream our own kernels must launch on
// to be ordered with them and captured with them. Null (the legacy default
// stream) without CUDA.
Stream CurrentStream(c10::Device device);

}  // namespace adapterd::gpu

#endif  // ADAPTERD_SERVER_GPU_STEP_GRAPH_H_
