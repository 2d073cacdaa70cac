// Real gRPC client calls that integration, fault and soak tests share.
#ifndef ADAPTERD_TESTS_SUPPORT_CLIENTS_H_
#define ADAPTERD_TESTS_SUPPORT_CLIENTS_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "adapterd/v1/inference.grpc.pb.h"

namespace adapterd::testing {

// A plaintext channel to `address` (loopback servers only), connected before
// it is returned. A fail-fast call on a channel whose first connection attempt
// failed gets UNAVAILABLE at once, so a single transient connect error would
// fail every call of a test (CI saw one attempt on loopback fail with
// "Invalid argument"). Waiting for READY lets gRPC's reconnect backoff absorb
// it.
// Returns the channel in whatever state it reached after `wait`, and says so
// on stderr, so that a server that never listens fails the caller's first
// call with gRPC's own message.
std::shared_ptr<grpc::Channel> Connect(const std::string& address, absl::Duration wait = absl::Seconds(60));

// Uploads `files` as adapter `id` in chunks of `chunk_bytes`, pinned on the
// device tier with `pin`.
grpc::Status UploadFiles(v1::Admin::Stub& admin, const std::string& id,
                         const std::map<std::string, std::string>& files, size_t chunk_bytes = 64 << 10,
                         bool pin = false);
grpc::Status Unload(v1::Admin::Stub& admin, const std::string& id, bool keep_on_disk = false);

// A greedy request: `prompt` then `max_new_tokens`, EOS ignored.
v1::GenerateRequest GreedyRequest(const std::string& adapter, std::vector<uint32_t> prompt, int max_new_tokens);

struct StreamResult {
  grpc::Status status;
  std::vector<uint32_t> tokens;
};
// GenerateStream to the end, or, with `cancel_after_first`, cancelled once
// the first tokens have arrived (a client that goes away mid-stream).
StreamResult StreamTokens(v1::Inference::Stub& stub, const v1::GenerateRequest& req,
                          bool cancel_after_first = false, absl::Duration deadline = absl::Seconds(300));

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_SUPPORT_CLIENTS_H_
