// The one conversion from absl::Status to grpc::Status.
#ifndef ADAPTERD_SERVER_RPC_GRPC_STATUS_H_
#define ADAPTERD_SERVER_RPC_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string_view>

#include "absl/status/status.h"

namespace adapterd::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);
// "OK", "INVALID_ARGUMENT", ... for metric labels and logs.
std::string_view GrpcCodeName(grpc::StatusCode code);

}  // namespace adapterd::rpc

#endif  // ADAPTERD_SERVER_RPC_GRPC_STATUS_H_
