#include "server/rpc/call_auth.h"

#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/auth_context.h>

#include <memory>
#include <string>

namespace adapterd::rpc {

auth::PresentedCredentials CredentialsOf(const grpc::ServerContextBase& ctx) {
  auth::PresentedCredentials out;
  const auto& md = ctx.client_metadata();
  if (auto it = md.find("authorization"); it != md.end()) {
    auth::ParseAuthorization(absl::string_view(it->second.data(), it->second.size()), out);
  }
  const std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const char* prop : {GRPC_X509_CN_PROPERTY_NAME, GRPC_X509_SAN_PROPERTY_NAME}) {
      for (const grpc::string_ref& v : auth->FindPropertyValues(prop)) {
        out.client_names.emplace_back(v.data(), v.size());
      }
    }
  }
  return out;
}

absl::Status AuthorizeCall(const CallAuthenticator* authenticator, const grpc::ServerContextBase& ctx, Role role) {
  if (authenticator == nullptr || !authenticator->NeedsCredential(role)) return absl::OkStatus();
  return authenticator->Authorize(CredentialsOf(ctx), role);
}

}  // namespace adapterd::rpc
