// Helpers the conformance tests share: writing the prompts the Python
// reference scripts read and reading the tensors they write, loading adapters over the Admin API, and a
// ResultSink that collects one request's tokens.
#ifndef ADAPTERD_TESTS_SUPPORT_REFERENCE_OUTPUTS_H_
#define ADAPTERD_TESTS_SUPPORT_REFERENCE_OUTPUTS_H_

#include <ATen/core/Tensor.h>
#include <grpcpp/grpcpp.h>

#include <span>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "server/engine/request.h"
#include "server/model/safetensors.h"

namespace adapterd::testing {

// An owned copy of tensor `name` (F32 or I64); a test failure and zeros if
// the file lacks it.
at::Tensor ReadReference(const model::SafetensorsFile& f, const std::string& name);

// Writes `prompts` as the JSON list of token id lists that the reference
// scripts read (`--prompts`); a test failure if it cannot.
void WritePrompts(const std::string& path, const std::vector<std::vector<int64_t>>& prompts);

// The elements of an int64 tensor.
std::vector<int64_t> ToVector(const at::Tensor& t);

// Admin LoadAdapter by path.
grpc::Status LoadAdapterByPath(v1::Admin::Stub& admin, const std::string& id, const std::string& dir,
                               v1::AdapterInfo* info);
// Admin UploadAdapter of the directory's config and weights (PEFT's or
// AdapterHub's file name), and its config.json when it has one, in 64 KiB
// chunks.
grpc::Status UploadAdapterDir(v1::Admin::Stub& admin, const std::string& id, const std::string& dir,
                              v1::AdapterInfo* info);

// Collects one request's tokens; `done` fires on OnFinish. Called by the
// engine thread only.
class CollectingSink : public engine::ResultSink {
 public:
  void OnTokens(std::span<const int64_t> t, std::span<const float>) override {
    tokens.insert(tokens.end(), t.begin(), t.end());
  }
  void OnFinish(const engine::Finish& f) override {
    finish = f;
    done.Notify();
  }
  std::vector<int64_t> tokens;
  engine::Finish finish;
  absl::Notification done;
};

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_SUPPORT_REFERENCE_OUTPUTS_H_
