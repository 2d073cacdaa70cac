#include "server/auth/auth_settings.h"

#include <utility>

#include "absl/log/log.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace adapterd::auth {

absl::StatusOr<std::unique_ptr<CallAuthenticator>> MakeCallAuthenticator(const AuthSettings& s) {
  CallAuthOptions o;
  if (s.mode != "token" && s.mode != "none") {
    return absl::InvalidArgumentError("--admin_auth must be 'token' or 'none'");
  }
  o.admin_open = s.mode == "none";
  absl::StatusOr<std::string> admin = ReadSecret(s.admin_token_file, "ADAPTERD_ADMIN_TOKEN");
  if (!admin.ok()) return admin.status();
  absl::StatusOr<std::string> inference = ReadSecret(s.inference_token_file, "ADAPTERD_INFERENCE_TOKEN");
  if (!inference.ok()) return inference.status();
  if (!admin->empty() && *admin == *inference) {
    return absl::InvalidArgumentError("the admin and inference tokens must differ");
  }
  o.admin_token = *std::move(admin);
  o.inference_token = *std::move(inference);
  o.admin_client_names = s.admin_client_names;
  o.inference_client_names = s.inference_client_names;
  if ((!o.admin_client_names.empty() || !o.inference_client_names.empty()) && !s.tls_client_ca) {
    return absl::InvalidArgumentError("--admin_client_names and --inference_client_names need --tls_client_ca_file");
  }
  if (o.admin_open && (!o.admin_token.empty() || !o.admin_client_names.empty())) {
    return absl::InvalidArgumentError("--admin_auth=none excludes an admin token or admin client names");
  }
  auto source = [](const std::string& file, const char* env) {
    return file.empty() ? absl::StrCat("$", env) : file;
  };
  if (o.admin_open) {
    LOG(WARNING) << "--admin_auth=none: anyone who reaches the Admin listener may load and unload adapters";
  } else if (!o.admin_token.empty()) {
    LOG(INFO) << "Admin API: bearer token from " << source(s.admin_token_file, "ADAPTERD_ADMIN_TOKEN");
  }
  if (!o.admin_open && o.admin_token.empty() && o.admin_client_names.empty()) {
    LOG(WARNING) << "no admin credential is configured: every Admin API call will be refused (set "
                    "--admin_token_file, $ADAPTERD_ADMIN_TOKEN or --admin_client_names)";
  }
  if (!o.inference_token.empty()) {
    LOG(INFO) << "Inference API: bearer token from " << source(s.inference_token_file, "ADAPTERD_INFERENCE_TOKEN");
  }
  return std::make_unique<CallAuthenticator>(std::move(o));
}

}  // namespace adapterd::auth
