#include "server/auth/call_authenticator.h"

#include <cstdlib>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_env.h"

namespace adapterd::auth {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

PresentedCredentials Token(const std::string& t) {
  PresentedCredentials c;
  c.bearer_token = t;
  return c;
}

PresentedCredentials Names(std::vector<std::string> n) {
  PresentedCredentials c;
  c.client_names = std::move(n);
  return c;
}

CallAuthOptions Tokens() {
  CallAuthOptions o;
  o.admin_token = "the-admin-token";
  o.inference_token = "the-inference-token";
  return o;
}

TEST(ConstantTimeEqualsTest, ComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("ab", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", std::string("abc\0", 4)));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
}

TEST(CallAuthenticatorTest, AdminNeedsTheAdminToken) {
  CallAuthenticator auth(Tokens());
  EXPECT_TRUE(auth.Authorize(Token("the-admin-token"), Role::kAdmin).ok());
  EXPECT_EQ(auth.Authorize(PresentedCredentials{}, Role::kAdmin).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Authorize(Token("the-admin-toke"), Role::kAdmin).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Authorize(Token(""), Role::kAdmin).code(), absl::StatusCode::kUnauthenticated);
  const absl::Status denied = auth.Authorize(Token("the-inference-token"), Role::kAdmin);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(denied.message(), Not(HasSubstr("the-inference-token")));
  PresentedCredentials malformed;
  malformed.malformed_authorization = true;
  EXPECT_EQ(auth.Authorize(malformed, Role::kAdmin).code(), absl::StatusCode::kUnauthenticated);
}

TEST(CallAuthenticatorTest, InferenceIsOpenUntilATokenIsSet) {
  CallAuthOptions o;
  o.admin_token = "the-admin-token";
  CallAuthenticator open(o);
  EXPECT_FALSE(open.inference_protected());
  EXPECT_TRUE(open.Authorize(PresentedCredentials{}, Role::kInference).ok());

  CallAuthenticator closed(Tokens());
  EXPECT_TRUE(closed.inference_protected());
  EXPECT_EQ(closed.Authorize(PresentedCredentials{}, Role::kInference).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(closed.Authorize(Token("nope"), Role::kInference).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(closed.Authorize(Token("the-inference-token"), Role::kInference).ok());
  EXPECT_TRUE(closed.Authorize(Token("the-admin-token"), Role::kInference).ok());
}

TEST(CallAuthenticatorTest, ClientCertificateNamesGrantRoles) {
  CallAuthOptions o;
  o.admin_client_names = {"ops-admin"};
  o.inference_client_names = {"app"};
  CallAuthenticator auth(o);
  EXPECT_TRUE(auth.admin_reachable());
  EXPECT_TRUE(auth.Authorize(Names({"ops-admin"}), Role::kAdmin).ok());
  EXPECT_TRUE(auth.Authorize(Names({"other", "ops-admin"}), Role::kAdmin).ok());
  EXPECT_EQ(auth.Authorize(Names({"app"}), Role::kAdmin).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.Authorize(Names({"stranger"}), Role::kAdmin).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(auth.Authorize(Names({"app"}), Role::kInference).ok());
  EXPECT_TRUE(auth.Authorize(Names({"ops-admin"}), Role::kInference).ok());
  EXPECT_EQ(auth.Authorize(Names({"stranger"}), Role::kInference).code(), absl::StatusCode::kUnauthenticated);
}

TEST(CallAuthenticatorTest, NoAdminCredentialMeansNoAdminCalls) {
  CallAuthenticator auth(CallAuthOptions{});
  EXPECT_FALSE(auth.admin_reachable());
  const absl::Status st = auth.Authorize(Token("x"), Role::kAdmin);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(auth.Authorize(PresentedCredentials{}, Role::kAdmin).message(), HasSubstr("--admin_token_file"));

  CallAuthOptions none;
  none.admin_open = true;
  EXPECT_TRUE(CallAuthenticator(none).Authorize(PresentedCredentials{}, Role::kAdmin).ok());
}

TEST(ParseAuthorizationTest, BearerOrMalformed) {
  PresentedCredentials a;
  ParseAuthorization("bearer  tok-1 ", a);
  EXPECT_EQ(a.bearer_token, "tok-1");
  EXPECT_FALSE(a.malformed_authorization);
  PresentedCredentials b;
  ParseAuthorization("Basic dXNlcjpwdw==", b);
  EXPECT_FALSE(b.bearer_token.has_value());
  EXPECT_TRUE(b.malformed_authorization);
  PresentedCredentials c;
  ParseAuthorization("Bearer ", c);
  EXPECT_TRUE(c.malformed_authorization);
}

TEST(ReadSecretTest, FileOrEnvironment) {
  const std::string dir = testing::MakeTempDir("secret");
  std::ofstream(dir + "/t") << "  tok-123\n\n";
  auto t = ReadSecret(dir + "/t", "ADAPTERD_TEST_UNSET_VARIABLE");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, "tok-123");
  std::ofstream(dir + "/empty") << "\n";
  auto empty = ReadSecret(dir + "/empty", "X");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr(dir + "/empty"));
  EXPECT_EQ(ReadSecret(dir + "/missing", "X").status().code(), absl::StatusCode::kNotFound);
  setenv("ADAPTERD_TEST_SECRET", " from-env ", 1);
  EXPECT_EQ(*ReadSecret("", "ADAPTERD_TEST_SECRET"), "from-env");
  EXPECT_EQ(*ReadSecret("", "ADAPTERD_TEST_UNSET_VARIABLE"), "");
}

}  // namespace
}  // namespace adapterd::auth
