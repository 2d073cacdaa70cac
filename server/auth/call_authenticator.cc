#include "server/auth/call_authenticator.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/file_util.h"

namespace adapterd::auth {

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

void ParseAuthorization(absl::string_view value, PresentedCredentials& creds) {
  constexpr absl::string_view kBearer = "Bearer ";
  if (value.size() > kBearer.size() && absl::StartsWithIgnoreCase(value, kBearer)) {
    creds.bearer_token = std::string(absl::StripAsciiWhitespace(value.substr(kBearer.size())));
  } else {
    creds.malformed_authorization = true;
  }
}

CallAuthenticator::Grant CallAuthenticator::TokenGrant(const std::string& token) const {
  // Both comparisons always run, so timing does not tell which role matched.
  const bool admin = !options_.admin_token.empty() && ConstantTimeEquals(token, options_.admin_token);
  const bool inference =
      !options_.inference_token.empty() && ConstantTimeEquals(token, options_.inference_token);
  if (admin) return Grant::kAdmin;
  if (inference) return Grant::kInference;
  return Grant::kNone;
}

CallAuthenticator::Grant CallAuthenticator::NameGrant(const std::vector<std::string>& names) const {
  Grant g = Grant::kNone;
  for (const std::string& n : names) {
    if (std::find(options_.admin_client_names.begin(), options_.admin_client_names.end(), n) !=
        options_.admin_client_names.end()) {
      return Grant::kAdmin;
    }
    if (std::find(options_.inference_client_names.begin(), options_.inference_client_names.end(), n) !=
        options_.inference_client_names.end()) {
      g = Grant::kInference;
    }
  }
  return g;
}

absl::Status CallAuthenticator::Authorize(const PresentedCredentials& creds, Role role) const {
  if (!NeedsCredential(role)) return absl::OkStatus();
  if (creds.malformed_authorization) {
    return absl::UnauthenticatedError("the authorization metadata or header must be \"Bearer <token>\"");
  }
  Grant grant = Grant::kNone;
  if (creds.bearer_token.has_value()) {
    grant = TokenGrant(*creds.bearer_token);
    if (grant == Grant::kNone) return absl::UnauthenticatedError("the bearer token is not valid");
  }
  const Grant by_name = NameGrant(creds.client_names);
  if (by_name == Grant::kAdmin || (by_name == Grant::kInference && grant == Grant::kNone)) grant = by_name;
  const char* what = role == Role::kAdmin ? "the Admin API" : "the Inference API";
  switch (grant) {
    case Grant::kAdmin: return absl::OkStatus();
    case Grant::kInference:
      if (role == Role::kInference) return absl::OkStatus();
      return absl::PermissionDeniedError(
          "this credential has the inference role; the Admin API needs the admin token or an admin client "
          "certificate");
    case Grant::kNone: break;
  }
  if (role == Role::kAdmin && !admin_reachable()) {
    return absl::UnauthenticatedError(
        "the Admin API has no credential configured: start the server with --admin_token_file, "
        "ADAPTERD_ADMIN_TOKEN or --admin_client_names (or --admin_auth=none)");
  }
  return absl::UnauthenticatedError(absl::StrCat(
      what, " needs a credential: send \"authorization: Bearer <token>\" (gRPC metadata or an HTTP header) or a "
            "client certificate"));
}

absl::StatusOr<std::string> ReadSecret(const std::string& path, const char* env) {
  if (path.empty()) {
    const char* v = std::getenv(env);
    return v == nullptr ? std::string() : std::string(absl::StripAsciiWhitespace(v));
  }
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("cannot read the token file ", path));
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("the token file ", path, " is empty"));
  if (token.size() > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("the token file ", path, " holds more than 4096 bytes"));
  }
  return token;
}

}  // namespace adapterd::auth
