#include "server/cli/cli_common.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051", "Server address");
ABSL_FLAG(double, timeout_seconds, 60, "Deadline of the call");
ABSL_FLAG(std::string, token_file, "",
          "File holding the bearer token sent with every call; empty reads $ADAPTERD_TOKEN");
ABSL_FLAG(bool, tls, false, "Connect with TLS (implied by --tls_ca_file or --tls_cert_file)");
ABSL_FLAG(std::string, tls_ca_file, "", "PEM CA bundle that signed the server certificate "
          "(empty: the system roots)");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM client certificate for mutual TLS");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_server_name, "", "Name to verify the server certificate against "
          "(default: the host of --addr)");

namespace adapterd::cli {

bool ParseIds(const std::string& text, google::protobuf::RepeatedField<uint32_t>* out) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    uint32_t v;
    if (!absl::SimpleAtoi(part, &v)) return false;
    out->Add(v);
  }
  return true;
}

std::string ReadFileOrDie(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "error: cannot read " << flag << " " << path << "\n";
    std::exit(2);
  }
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

namespace {

// The bearer token, read once; never printed.
const std::string& Token() {
  static const std::string* token = [] {
    std::string t;
    if (const std::string f = absl::GetFlag(FLAGS_token_file); !f.empty()) {
      t = ReadFileOrDie(f, "--token_file");
    } else if (const char* e = std::getenv("ADAPTERD_TOKEN"); e != nullptr) {
      t = e;
    }
    return new std::string(absl::StripAsciiWhitespace(t));
  }();
  return *token;
}

}  // namespace

void Authenticate(grpc::ClientContext& ctx, const std::string& adapter_id) {
  if (!Token().empty()) ctx.AddMetadata("authorization", "Bearer " + Token());
  if (!adapter_id.empty()) ctx.AddMetadata("x-adapter-id", adapter_id);
}

std::shared_ptr<grpc::Channel> Connect(const std::string& addr) {
  const bool tls = absl::GetFlag(FLAGS_tls) || !absl::GetFlag(FLAGS_tls_ca_file).empty() ||
                   !absl::GetFlag(FLAGS_tls_cert_file).empty();
  if (!tls) return grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  grpc::SslCredentialsOptions ssl;
  if (const std::string f = absl::GetFlag(FLAGS_tls_ca_file); !f.empty()) {
    ssl.pem_root_certs = ReadFileOrDie(f, "--tls_ca_file");
  }
  if (const std::string f = absl::GetFlag(FLAGS_tls_cert_file); !f.empty()) {
    ssl.pem_cert_chain = ReadFileOrDie(f, "--tls_cert_file");
    ssl.pem_private_key = ReadFileOrDie(absl::GetFlag(FLAGS_tls_key_file), "--tls_key_file");
  }
  grpc::ChannelArguments args;
  if (const std::string n = absl::GetFlag(FLAGS_tls_server_name); !n.empty()) {
    args.SetSslTargetNameOverride(n);
  }
  return grpc::CreateCustomChannel(addr, grpc::SslCredentials(ssl), args);
}

int Report(const grpc::Status& s, const grpc::ClientContext& ctx) {
  std::string id;
  const auto& md = ctx.GetServerInitialMetadata();
  if (auto it = md.find("x-request-id"); it != md.end()) id.assign(it->second.data(), it->second.size());
  if (s.ok()) return 0;
  std::cerr << "error: " << s.error_code() << " " << s.error_message()
            << (id.empty() ? "" : " (request " + id + ")") << "\n";
  return 1;
}

const char* ReasonName(adapterd::v1::FinishReason r) {
  switch (r) {
    case adapterd::v1::FINISH_REASON_LENGTH: return "length";
    case adapterd::v1::FINISH_REASON_STOP: return "stop";
    case adapterd::v1::FINISH_REASON_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

void SetDeadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(
                       static_cast<int64_t>(absl::GetFlag(FLAGS_timeout_seconds) * 1000)));
}

}  // namespace adapterd::cli
