// MakeCallAuthenticator: the settings' checks against each other, and the
// authenticator it makes from the token files.
#include "server/auth/auth_settings.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_env.h"

namespace adapterd::auth {
namespace {

using ::testing::HasSubstr;

PresentedCredentials Token(const std::string& t) {
  PresentedCredentials c;
  c.bearer_token = t;
  return c;
}

TEST(AuthSettingsTest, TokensFromFilesGrantTheirRoles) {
  const std::string dir = testing::MakeTempDir("auth-settings");
  std::ofstream(dir + "/admin") << "admin-secret\n";
  std::ofstream(dir + "/inference") << "inference-secret\n";
  AuthSettings s;
  s.admin_token_file = dir + "/admin";
  s.inference_token_file = dir + "/inference";
  absl::StatusOr<std::unique_ptr<CallAuthenticator>> auth = MakeCallAuthenticator(s);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->Authorize(Token("admin-secret"), Role::kAdmin).ok());
  EXPECT_TRUE((*auth)->Authorize(Token("inference-secret"), Role::kInference).ok());
  EXPECT_FALSE((*auth)->Authorize(Token("inference-secret"), Role::kAdmin).ok());
  EXPECT_FALSE((*auth)->Authorize(PresentedCredentials{}, Role::kInference).ok());
}

TEST(AuthSettingsTest, ConflictingSettingsNameTheFlag) {
  unsetenv("ADAPTERD_ADMIN_TOKEN");
  unsetenv("ADAPTERD_INFERENCE_TOKEN");
  const std::string dir = testing::MakeTempDir("auth-settings-bad");
  std::ofstream(dir + "/same") << "one-secret\n";
  auto error = [](const AuthSettings& s) {
    absl::StatusOr<std::unique_ptr<CallAuthenticator>> auth = MakeCallAuthenticator(s);
    EXPECT_FALSE(auth.ok());
    return auth.ok() ? std::string("ok") : std::string(auth.status().message());
  };
  AuthSettings mode;
  mode.mode = "open";
  EXPECT_THAT(error(mode), HasSubstr("--admin_auth must be"));
  AuthSettings same;
  same.admin_token_file = same.inference_token_file = dir + "/same";
  EXPECT_THAT(error(same), HasSubstr("must differ"));
  AuthSettings names;
  names.admin_client_names = {"ops"};
  EXPECT_THAT(error(names), HasSubstr("need --tls_client_ca_file"));
  AuthSettings open;
  open.mode = "none";
  open.admin_token_file = dir + "/same";
  EXPECT_THAT(error(open), HasSubstr("--admin_auth=none excludes"));
  AuthSettings missing;
  missing.admin_token_file = dir + "/absent";
  EXPECT_THAT(error(missing), HasSubstr(dir + "/absent"));
}

TEST(AuthSettingsTest, NoneOpensTheAdminApi) {
  unsetenv("ADAPTERD_ADMIN_TOKEN");
  AuthSettings s;
  s.mode = "none";
  absl::StatusOr<std::unique_ptr<CallAuthenticator>> auth = MakeCallAuthenticator(s);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_FALSE((*auth)->NeedsCredential(Role::kAdmin));
  EXPECT_TRUE((*auth)->Authorize(PresentedCredentials{}, Role::kAdmin).ok());
}

}  // namespace
}  // namespace adapterd::auth
