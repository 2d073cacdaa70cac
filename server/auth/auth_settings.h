#ifndef ADAPTERD_SERVER_AUTH_AUTH_SETTINGS_H_
#define ADAPTERD_SERVER_AUTH_AUTH_SETTINGS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/auth/call_authenticator.h"

namespace adapterd::auth {

// The server's authentication settings as its flags give them: where the
// secrets are, never the secrets themselves.
struct AuthSettings {
  std::string mode = "token";  // --admin_auth: "token" or "none"
  std::string admin_token_file;      // empty: $ADAPTERD_ADMIN_TOKEN
  std::string inference_token_file;  // empty: $ADAPTERD_INFERENCE_TOKEN
  std::vector<std::string> admin_client_names;
  std::vector<std::string> inference_client_names;
  bool tls_client_ca = false;  // whether --tls_client_ca_file is set
};

// Reads the tokens and checks the settings against each other: an unknown
// mode, equal admin and inference tokens, client names without a client CA,
// or --admin_auth=none with an admin credential are INVALID_ARGUMENT errors
// that name the flag; an unreadable token file is the error ReadSecret
// returns. Logs where each token came from, never the token, and warns when
// the Admin API is open or has no credential at all.
absl::StatusOr<std::unique_ptr<CallAuthenticator>> MakeCallAuthenticator(const AuthSettings& s);

}  // namespace adapterd::auth

#endif  // ADAPTERD_SERVER_AUTH_AUTH_SETTINGS_H_
