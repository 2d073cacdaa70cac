// What every adapterctl command shares: the connection, credentials,
// deadlines and how errors are reported.
#ifndef ADAPTERD_SERVER_CLI_CLI_COMMON_H_
#define ADAPTERD_SERVER_CLI_CLI_COMMON_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/flags/declare.h"
#include "adapterd/v1/inference.pb.h"
#include "google/protobuf/repeated_field.h"

ABSL_DECLARE_FLAG(std::string, addr);
ABSL_DECLARE_FLAG(double, timeout_seconds);

namespace adapterd::cli {

// Comma-separated unsigned integers into `out`; false when one is not.
bool ParseIds(const std::string& text, google::protobuf::RepeatedField<uint32_t>* out);
// The file's contents; exits with status 2 naming `flag` when unreadable.
std::string ReadFileOrDie(const std::string& path, const char* flag);
// A channel to `addr`, plaintext or TLS as the flags say.
std::shared_ptr<grpc::Channel> Connect(const std::string& addr);
// Adds the bearer token (--token_file or $ADAPTERD_TOKEN), if any.
// Also sends `adapter_id` (when not empty) as the x-adapter-id metadata,
// the key a router in front of several replicas hashes on (it cannot read
// the protobuf body).
void Authenticate(grpc::ClientContext& ctx, const std::string& adapter_id = "");
// Sets the deadline from --timeout_seconds.
void SetDeadline(grpc::ClientContext& ctx);
// 0 for OK; otherwise prints the error with the request id and returns 1.
int Report(const grpc::Status& s, const grpc::ClientContext& ctx);
const char* ReasonName(adapterd::v1::FinishReason r);

}  // namespace adapterd::cli

#endif  // ADAPTERD_SERVER_CLI_CLI_COMMON_H_
