// Credentials of a gRPC call, for the transport-neutral authenticator.
#ifndef ADAPTERD_SERVER_RPC_CALL_AUTH_H_
#define ADAPTERD_SERVER_RPC_CALL_AUTH_H_

#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "server/auth/call_authenticator.h"

namespace adapterd::rpc {

using auth::CallAuthenticator;
using auth::Role;

// Reads the bearer token ("authorization" metadata) and the verified
// client-certificate names of a call.
auth::PresentedCredentials CredentialsOf(const grpc::ServerContextBase& ctx);

// Whether the call may use `role`. Reads the call's credentials only when
// the role needs one, so open inference calls pay nothing; a null
// authenticator lets every call in (in-process tests only).
absl::Status AuthorizeCall(const CallAuthenticator* authenticator, const grpc::ServerContextBase& ctx, Role role);

}  // namespace adapterd::rpc

#endif  // ADAPTERD_SERVER_RPC_CALL_AUTH_H_
