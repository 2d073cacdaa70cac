// Who may call which API: bearer tokens and client-certificate names,
// independent of the transport that carried them.
#ifndef ADAPTERD_SERVER_AUTH_CALL_AUTHENTICATOR_H_
#define ADAPTERD_SERVER_AUTH_CALL_AUTHENTICATOR_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace adapterd::auth {

// The two roles. Admin includes Inference: an admin credential may also
// generate.
enum class Role { kInference, kAdmin };

struct CallAuthOptions {
  // Bearer tokens; empty means no token grants that role.
  std::string admin_token;
  std::string inference_token;
  // Names (certificate common name or subject alternative name) of verified
  // TLS client certificates that grant each role.
  std::vector<std::string> admin_client_names;
  std::vector<std::string> inference_client_names;
  // Admin calls need no credential at all. Chosen only explicitly
  // (--admin_auth=none); never the default.
  bool admin_open = false;
};

// What one call presented, as its transport read it: the bearer token of
// its "authorization" metadata or header, and its verified TLS peer.
struct PresentedCredentials {
  std::optional<std::string> bearer_token;  // from "authorization: Bearer ..."
  bool malformed_authorization = false;     // an authorization value of another form
  std::vector<std::string> client_names;    // verified client-certificate names
};

// Reads "Bearer <token>" from an authorization value into `creds`; any
// other form marks it malformed.
void ParseAuthorization(absl::string_view value, PresentedCredentials& creds);

// Decides whether a call may use a role: UNAUTHENTICATED when it presents no
// valid credential, PERMISSION_DENIED when its credential is valid but only
// for the inference role. Tokens are compared in constant time, and no
// message ever contains a presented or configured secret. Transports read
// the credentials (rpc::CredentialsOf for gRPC, the HTTP transport from its
// headers and TLS session) and ask here. Immutable after construction, so
// thread-safe.
class CallAuthenticator {
 public:
  explicit CallAuthenticator(CallAuthOptions options) : options_(std::move(options)) {}

  absl::Status Authorize(const PresentedCredentials& creds, Role role) const;

  // True when a call needs a credential for `role`; when false, Authorize
  // grants it whatever was presented, so transports may skip reading them.
  bool NeedsCredential(Role role) const {
    return role == Role::kAdmin ? !options_.admin_open : inference_protected();
  }
  // True when inference calls need a credential.
  bool inference_protected() const {
    return !options_.inference_token.empty() || !options_.inference_client_names.empty();
  }
  // True when some credential can make admin calls (or none is needed).
  bool admin_reachable() const {
    return options_.admin_open || !options_.admin_token.empty() || !options_.admin_client_names.empty();
  }
  // True when admin calls need no credential (--admin_auth=none).
  bool admin_open() const { return options_.admin_open; }

 private:
  enum class Grant { kNone, kInference, kAdmin };
  Grant TokenGrant(const std::string& token) const;
  Grant NameGrant(const std::vector<std::string>& names) const;

  const CallAuthOptions options_;
};

// Compares two secrets in time that depends only on their lengths.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// A token from a file (surrounding whitespace trimmed) or, when `path` is
// empty, from the environment variable `env` (empty result when unset).
// Errors name the file, never its contents.
absl::StatusOr<std::string> ReadSecret(const std::string& path, const char* env);

}  // namespace adapterd::auth

#endif  // ADAPTERD_SERVER_AUTH_CALL_AUTHENTICATOR_H_
