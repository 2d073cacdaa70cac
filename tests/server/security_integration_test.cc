// Security of the real server on loopback: bearer tokens and roles, TLS and
// mutual TLS, the explicit plaintext choice, Admin bound to loopback, path
// loads confined to the roots, and request limits.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAdminToken[] = "admin-s3cret-token-0123456789";
constexpr char kInferenceToken[] = "infer-s3cret-token-9876543210";

std::string WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  chmod(path.c_str(), 0600);
  return path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Calls with an optional bearer token.
struct Caller {
  std::shared_ptr<grpc::Channel> channel;

  grpc::Status List(const std::string& token, v1::ListAdaptersResponse* out = nullptr) const {
    v1::ListAdaptersResponse resp;
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", token);
    return v1::Admin::NewStub(channel)->ListAdapters(&ctx, {}, out ? out : &resp);
  }
  grpc::Status Load(const std::string& token, const std::string& id, const std::string& path) const {
    v1::LoadAdapterRequest req;
    req.set_adapter_id(id);
    req.set_path(path);
    v1::AdapterInfo resp;
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", token);
    return v1::Admin::NewStub(channel)->LoadAdapter(&ctx, req, &resp);
  }
  grpc::Status Upload(const std::string& token) const {
    v1::AdapterInfo resp;
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", token);
    auto stub = v1::Admin::NewStub(channel);
    auto w = stub->UploadAdapter(&ctx, &resp);
    v1::UploadAdapterRequest h;
    h.mutable_header()->set_adapter_id("up");
    w->Write(h);
    w->WritesDone();
    return w->Finish();
  }
  grpc::Status Generate(const std::string& token, v1::GenerateRequest req = {}) const {
    if (req.prompt_token_ids_size() == 0) req.add_prompt_token_ids(1);
    if (!req.has_sampling()) req.mutable_sampling()->set_max_new_tokens(2);
    v1::GenerateResponse resp;
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", token);
    return v1::Inference::NewStub(channel)->Generate(&ctx, req, &resp);
  }
};

std::string Bearer(const std::string& t) { return "Bearer " + t; }

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir("security"); }
  std::string dir_;
};

TEST_F(SecurityTest, TokensGuardAdminAndInferenceWithRoles) {
  const std::string admin_file = WriteFile(dir_ + "/admin.token", std::string(kAdminToken) + "\n");
  const std::string infer_file = WriteFile(dir_ + "/infer.token", kInferenceToken);
  auto s = testing::ServerProcess::Start(
      {"--admin_token_file=" + admin_file, "--inference_token_file=" + infer_file});
  ASSERT_TRUE(s.ok()) << s.status();
  Caller c{grpc::CreateChannel((*s)->grpc_address(), grpc::InsecureChannelCredentials())};

  EXPECT_EQ(c.List("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(c.List(Bearer("wrong")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(c.List(Bearer(std::string(kAdminToken) + "x")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(c.List(std::string("Basic ") + kAdminToken).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status st = c.List(Bearer(kInferenceToken));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(st.error_message(), HasSubstr("inference role"));
  v1::ListAdaptersResponse listed;
  EXPECT_TRUE(c.List(Bearer(kAdminToken), &listed).ok());
  EXPECT_EQ(c.Upload("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(c.Upload(Bearer(kInferenceToken)).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(c.Load("", "x", "/tmp").error_code(), grpc::StatusCode::UNAUTHENTICATED);

  st = c.Generate("");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(c.Generate(Bearer("wrong")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(c.Generate(Bearer(kInferenceToken)).ok());
  EXPECT_TRUE(c.Generate(Bearer(kAdminToken)).ok());  // admin includes inference

  // The CLI sends the token from a file.
  const std::string ctl = testing::BinaryDir() + "/server/adapterctl --addr=" + (*s)->grpc_address();
  EXPECT_TRUE(testing::RunCommand(ctl + " list --token_file=" + admin_file).ok());
  auto denied = testing::RunCommand(ctl + " list --token_file=" + infer_file);
  ASSERT_FALSE(denied.ok());
  EXPECT_THAT(denied.status().message(), HasSubstr("inference role"));

  // Secrets never reach the log.
  const std::string log = (*s)->Log();
  EXPECT_THAT(log, HasSubstr(admin_file));
  EXPECT_THAT(log, Not(HasSubstr(kAdminToken)));
  EXPECT_THAT(log, Not(HasSubstr(kInferenceToken)));
  EXPECT_EQ((*s)->Stop(SIGTERM), 0);
  EXPECT_THAT((*s)->Log(), Not(HasSubstr(kAdminToken)));
}

TEST_F(SecurityTest, AdminWithoutAnyCredentialRefusesEveryCall) {
  auto s = testing::ServerProcess::Start({"--admin_auth=token"});
  ASSERT_TRUE(s.ok()) << s.status();
  Caller c{grpc::CreateChannel((*s)->grpc_address(), grpc::InsecureChannelCredentials())};
  grpc::Status st = c.List("");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(st.error_message(), HasSubstr("--admin_token_file"));
  EXPECT_EQ(c.List(Bearer("anything")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(c.Generate("").ok());  // inference stays open without an inference token
}

TEST_F(SecurityTest, TransportAndBindingMustBeChosenSafely) {
  // No TLS and no --plaintext: refuse to start, naming both choices.
  auto s = testing::ServerProcess::Start({"--plaintext=false"});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("--plaintext"));
  EXPECT_THAT(s.status().message(), HasSubstr("--tls_cert_file"));
  // A non-loopback listener must not carry Admin implicitly (refused before binding).
  s = testing::ServerProcess::Start({"--listen=0.0.0.0:0"});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("--admin_listen"));
  // Bad credential files are named.
  s = testing::ServerProcess::Start({"--admin_token_file=" + dir_ + "/missing.token"});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr(dir_ + "/missing.token"));
  s = testing::ServerProcess::Start({"--tls_cert_file=" + WriteFile(dir_ + "/x.pem", "not pem"),
                                     "--tls_key_file=" + dir_ + "/x.pem"});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("not a PEM file"));
  // Admin on its own loopback listener, not on the inference one.
  s = testing::ServerProcess::Start({"--admin_listen=127.0.0.1:0"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_NE((*s)->admin_address(), (*s)->grpc_address());
  Caller inference{grpc::CreateChannel((*s)->grpc_address(), grpc::InsecureChannelCredentials())};
  Caller admin{grpc::CreateChannel((*s)->admin_address(), grpc::InsecureChannelCredentials())};
  EXPECT_EQ(inference.List("").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_TRUE(admin.List("").ok());
}

// A CA, a server certificate for localhost/127.0.0.1, and client
// certificates named ops-admin and stranger, made with the openssl CLI.
class TlsTest : public SecurityTest {
 protected:
  void SetUp() override {
    SecurityTest::SetUp();
    const std::string d = dir_;
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::string script = absl::StrCat(
        "set -e; cd ", d, "; ",
        "openssl req -x509 ", key, " -keyout ca.key -out ca.pem -days 2 -subj /CN=adapterd-test-ca 2>/dev/null; ",
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext; ");
    for (const char* name : {"server", "ops-admin", "stranger"}) {
      absl::StrAppend(&script, "openssl req ", key, " -keyout ", name, ".key -out ", name, ".csr -subj /CN=",
                      std::string(name) == "server" ? "localhost" : name, " 2>/dev/null; ",
                      "openssl x509 -req -in ", name, ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out ",
                      name, ".pem", std::string(name) == "server" ? " -extfile server.ext" : "", " 2>/dev/null; ");
    }
    auto r = testing::RunCommand(script);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  std::shared_ptr<grpc::Channel> Tls(const std::string& addr, const std::string& client = "") const {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ReadFile(dir_ + "/ca.pem");
    if (!client.empty()) {
      o.pem_cert_chain = ReadFile(dir_ + "/" + client + ".pem");
      o.pem_private_key = ReadFile(dir_ + "/" + client + ".key");
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    return grpc::CreateCustomChannel(addr, grpc::SslCredentials(o), args);
  }
};

TEST_F(TlsTest, TlsAndClientCertificatesGrantRoles) {
  const std::string admin_file = WriteFile(dir_ + "/admin.token", kAdminToken);
  auto s = testing::ServerProcess::Start(
      {"--tls_cert_file=" + dir_ + "/server.pem", "--tls_key_file=" + dir_ + "/server.key",
       "--tls_client_ca_file=" + dir_ + "/ca.pem", "--admin_client_names=ops-admin",
       "--admin_token_file=" + admin_file});
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string addr = (*s)->grpc_address();

  Caller anon{Tls(addr)};
  EXPECT_TRUE(anon.Generate("").ok());
  EXPECT_EQ(anon.List("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(anon.List(Bearer(kAdminToken)).ok());
  EXPECT_TRUE(Caller{Tls(addr, "ops-admin")}.List("").ok());
  EXPECT_EQ(Caller{Tls(addr, "stranger")}.List("").error_code(), grpc::StatusCode::UNAUTHENTICATED);

  // A plaintext client cannot talk to the TLS listener.
  Caller plain{grpc::CreateChannel(addr, grpc::InsecureChannelCredentials())};
  EXPECT_EQ(plain.Generate("").error_code(), grpc::StatusCode::UNAVAILABLE);

  // The CLI speaks TLS and mutual TLS.
  const std::string ctl = absl::StrCat(testing::BinaryDir(), "/server/adapterctl --addr=", addr,
                                       " --tls_ca_file=", dir_, "/ca.pem --tls_server_name=localhost");
  EXPECT_TRUE(testing::RunCommand(ctl + " list --token_file=" + admin_file).ok());
  EXPECT_TRUE(testing::RunCommand(absl::StrCat(ctl, " list --tls_cert_file=", dir_, "/ops-admin.pem --tls_key_file=",
                                               dir_, "/ops-admin.key")).ok());
  EXPECT_FALSE(testing::RunCommand(ctl + " list").ok());
  EXPECT_EQ((*s)->Stop(SIGTERM), 0);
}

// The HTTP listener serves the same TLS, and client certificates and tokens
// grant the same roles there.
TEST_F(TlsTest, HttpListenerSpeaksTheSameTlsAndRoles) {
  const std::string admin_file = WriteFile(dir_ + "/admin.token", kAdminToken);
  auto s = testing::ServerProcess::Start(
      {"--tls_cert_file=" + dir_ + "/server.pem", "--tls_key_file=" + dir_ + "/server.key",
       "--tls_client_ca_file=" + dir_ + "/ca.pem", "--admin_client_names=ops-admin",
       "--admin_token_file=" + admin_file});
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string url = absl::StrCat("https://", (*s)->http_address());
  const std::string curl = absl::StrCat("curl -sS --max-time 60 -o /dev/null -w '%{http_code}' --cacert ", dir_,
                                        "/ca.pem ");
  auto code = [&](const std::string& args) {
    absl::StatusOr<std::string> out = testing::RunCommand(curl + args);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : std::string();
  };
  const std::string unload = absl::StrCat(" -H 'Content-Type: application/json' -d '{\"lora_name\": \"none\"}' ", url,
                                          "/v1/unload_lora_adapter");
  EXPECT_EQ(code(url + "/v1/models"), "200");
  EXPECT_EQ(code(unload), "401");
  EXPECT_EQ(code(absl::StrCat("-H 'Authorization: Bearer ", kAdminToken, "'", unload)), "404");  // authorized
  EXPECT_EQ(code(absl::StrCat("--cert ", dir_, "/ops-admin.pem --key ", dir_, "/ops-admin.key", unload)), "404");
  EXPECT_EQ(code(absl::StrCat("--cert ", dir_, "/stranger.pem --key ", dir_, "/stranger.key", unload)), "401");
  // Plaintext HTTP does not reach the TLS listener.
  EXPECT_FALSE(testing::RunCommand(absl::StrCat("curl -sS --max-time 20 -f http://", (*s)->http_address(),
                                                "/health")).ok());
  EXPECT_EQ((*s)->Stop(SIGTERM), 0);
}

TEST_F(SecurityTest, PathLoadsStayInsideTheRoots) {
  const std::string root = dir_ + "/root", outside = dir_ + "/outside";
  ASSERT_TRUE(testing::QvLora().WriteTo(root + "/good").ok());
  ASSERT_TRUE(testing::QvLora().WriteTo(outside + "/evil").ok());
  fs::create_symlink(outside + "/evil", root + "/dirlink");
  fs::create_directories(root + "/filelink");
  fs::copy_file(outside + "/evil/adapter_model.safetensors", root + "/filelink/adapter_model.safetensors");
  fs::create_symlink(outside + "/evil/adapter_config.json", root + "/filelink/adapter_config.json");

  auto s = testing::ServerProcess::Start({"--adapter_roots=" + root, "--demo_adapters=false"});
  ASSERT_TRUE(s.ok()) << s.status();
  Caller c{grpc::CreateChannel((*s)->grpc_address(), grpc::InsecureChannelCredentials())};
  EXPECT_TRUE(c.Load("", "good", root + "/good").ok());
  struct Bad {
    std::string path;
    grpc::StatusCode code;
    std::string words;
  };
  for (const Bad& b : std::vector<Bad>{
           {root + "/../outside/evil", grpc::StatusCode::INVALID_ARGUMENT, "'..'"},
           {outside + "/evil", grpc::StatusCode::PERMISSION_DENIED, "outside the server's --adapter_roots"},
           {root + "/dirlink", grpc::StatusCode::PERMISSION_DENIED, "outside the server's --adapter_roots"},
           {root + "/filelink", grpc::StatusCode::PERMISSION_DENIED, "adapter_config.json is a link"},
           {"relative/dir", grpc::StatusCode::INVALID_ARGUMENT, "must be absolute"},
           {root + "/nothing-here", grpc::StatusCode::NOT_FOUND, "does not exist"},
       }) {
    SCOPED_TRACE(b.path);
    grpc::Status st = c.Load("", "bad", b.path);
    EXPECT_EQ(st.error_code(), b.code) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(b.words));
  }
  v1::ListAdaptersResponse listed;
  ASSERT_TRUE(c.List("", &listed).ok());
  ASSERT_EQ(listed.adapters_size(), 1);
  EXPECT_EQ(listed.adapters(0).adapter_id(), "good");
  EXPECT_EQ((*s)->Stop(SIGTERM), 0);

  // Without roots, path loads are off; uploads still work.
  s = testing::ServerProcess::Start({"--adapter_roots=", "--demo_adapters=false"});
  ASSERT_TRUE(s.ok()) << s.status();
  Caller none{grpc::CreateChannel((*s)->grpc_address(), grpc::InsecureChannelCredentials())};
  grpc::Status st = none.Load("", "good", root + "/good");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(st.error_message(), HasSubstr("--adapter_roots"));
}

TEST_F(SecurityTest, RequestLimitsAreNamed) {
  auto s = testing::ServerProcess::Start(
      {"--max_prompt_tokens=8", "--max_new_tokens=16", "--max_stop_token_ids=2", "--max_message_mb=1"});
  ASSERT_TRUE(s.ok()) << s.status();
  Caller c{grpc::CreateChannel((*s)->grpc_address(), grpc::InsecureChannelCredentials())};
  auto request = [](int prompt, int new_tokens, int stops) {
    v1::GenerateRequest r;
    for (int i = 0; i < prompt; ++i) r.add_prompt_token_ids(1 + i % 100);
    r.mutable_sampling()->set_max_new_tokens(new_tokens);
    for (int i = 0; i < stops; ++i) r.mutable_sampling()->add_stop_token_ids(7 + i);
    return r;
  };
  EXPECT_TRUE(c.Generate("", request(8, 16, 2)).ok());
  for (auto [req, flag] : {std::pair{request(9, 4, 0), "--max_prompt_tokens"},
                           std::pair{request(4, 17, 0), "--max_new_tokens"},
                           std::pair{request(4, 4, 3), "--max_stop_token_ids"}}) {
    grpc::Status st = c.Generate("", req);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << flag;
    EXPECT_THAT(st.error_message(), HasSubstr(flag));
  }
  // A message past --max_message_mb is refused by the transport.
  grpc::Status st = c.Generate("", request(1200000, 4, 0));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
}

}  // namespace
}  // namespace adapterd
