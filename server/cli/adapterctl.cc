// adapterctl: command-line client for adapterd.
//   adapterctl generate --prompt=1,2,3 [--max_new_tokens=16] [--adapter=ID] [--unary]
//   adapterctl load --id=ID --path=DIR [--replace]       (a directory on the server)
//   adapterctl upload --id=ID --path=DIR [--replace]     (files sent from this machine)
//   adapterctl unload --id=ID | get --id=ID | list
//   adapterctl health [--service=NAME]
// Credentials: --token_file (or $ADAPTERD_TOKEN), --tls_ca_file, and
// --tls_cert_file/--tls_key_file for mutual TLS.
#include <grpcpp/grpcpp.h>
#include <grpcpp/generic/generic_stub.h>

#include <condition_variable>
#include <mutex>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "adapterd/v1/inference.grpc.pb.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051", "Server address");
ABSL_FLAG(std::string, prompt, "", "Prompt token ids, comma-separated");
ABSL_FLAG(std::string, adapter, "", "Adapter id (empty = base model)");
ABSL_FLAG(uint32_t, max_new_tokens, 16, "Tokens to generate");
ABSL_FLAG(double, temperature, 0, "Sampling temperature (0 = greedy)");
ABSL_FLAG(uint32_t, top_k, 0, "Top-k filter (0 = off)");
ABSL_FLAG(double, top_p, 1, "Top-p filter (1 = off)");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed (0 = random)");
ABSL_FLAG(std::string, stop, "", "Stop token ids, comma-separated");
ABSL_FLAG(bool, ignore_eos, false, "Do not stop at the model's end-of-sequence token");
ABSL_FLAG(bool, logprobs, false, "Print the log-probability of each token");
ABSL_FLAG(bool, unary, false, "Use Generate instead of GenerateStream");
ABSL_FLAG(double, timeout_seconds, 60, "Deadline of the call");
ABSL_FLAG(std::string, service, "", "health: service name (empty = overall)");
ABSL_FLAG(std::string, admin_addr, "", "Admin address (empty = --addr)");
ABSL_FLAG(std::string, id, "", "load/upload/unload/get: adapter id");
ABSL_FLAG(std::string, path, "", "load: directory on the server; upload: local directory");
ABSL_FLAG(bool, replace, false, "load/upload: swap an adapter already loaded under --id");
ABSL_FLAG(bool, pin, false, "load/upload: keep the adapter on the device tier");
ABSL_FLAG(bool, keep_on_disk, false, "unload: keep it registered on disk, out of memory");
ABSL_FLAG(std::string, token_file, "",
          "File holding the bearer token sent with every call; empty reads $ADAPTERD_TOKEN");
ABSL_FLAG(bool, tls, false, "Connect with TLS (implied by --tls_ca_file or --tls_cert_file)");
ABSL_FLAG(std::string, tls_ca_file, "", "PEM CA bundle that signed the server certificate "
          "(empty: the system roots)");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM client certificate for mutual TLS");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_server_name, "", "Name to verify the server certificate against "
          "(default: the host of --addr)");

namespace {

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

void Authenticate(grpc::ClientContext& ctx) {
  if (!Token().empty()) ctx.AddMetadata("authorization", "Bearer " + Token());
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

int Generate(const std::shared_ptr<grpc::Channel>& channel) {
  adapterd::v1::GenerateRequest req;
  req.set_adapter_id(absl::GetFlag(FLAGS_adapter));
  if (!ParseIds(absl::GetFlag(FLAGS_prompt), req.mutable_prompt_token_ids())) {
    std::cerr << "error: --prompt must be comma-separated token ids\n";
    return 2;
  }
  auto* s = req.mutable_sampling();
  s->set_max_new_tokens(absl::GetFlag(FLAGS_max_new_tokens));
  s->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  s->set_top_k(absl::GetFlag(FLAGS_top_k));
  s->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  s->set_seed(absl::GetFlag(FLAGS_seed));
  s->set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  s->set_return_logprobs(absl::GetFlag(FLAGS_logprobs));
  if (!ParseIds(absl::GetFlag(FLAGS_stop), s->mutable_stop_token_ids())) {
    std::cerr << "error: --stop must be comma-separated token ids\n";
    return 2;
  }
  auto stub = adapterd::v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  Authenticate(ctx);
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(
                       static_cast<int64_t>(absl::GetFlag(FLAGS_timeout_seconds) * 1000)));
  const absl::Time start = absl::Now();
  if (absl::GetFlag(FLAGS_unary)) {
    adapterd::v1::GenerateResponse resp;
    grpc::Status st = stub->Generate(&ctx, req, &resp);
    if (int rc = Report(st, ctx); rc != 0) return rc;
    std::cout << absl::StrJoin(resp.token_ids(), " ") << "\n";
    if (resp.logprobs_size() > 0) std::cout << "logprobs: " << absl::StrJoin(resp.logprobs(), " ") << "\n";
    std::cerr << "finish=" << ReasonName(resp.finish_reason())
              << " prompt_tokens=" << resp.usage().prompt_tokens()
              << " completion_tokens=" << resp.usage().completion_tokens()
              << " request_id=" << resp.request_id() << " time=" << absl::FormatDuration(absl::Now() - start)
              << "\n";
    return 0;
  }
  auto reader = stub->GenerateStream(&ctx, req);
  adapterd::v1::GenerateStreamResponse msg;
  std::string request_id;
  while (reader->Read(&msg)) {
    for (int i = 0; i < msg.token_ids_size(); ++i) {
      std::cout << msg.token_ids(i);
      if (i < msg.logprobs_size()) std::cout << "(" << msg.logprobs(i) << ")";
      std::cout << " " << std::flush;
    }
    request_id = msg.request_id();
    if (msg.finish_reason() != adapterd::v1::FINISH_REASON_UNSPECIFIED) {
      std::cout << "\n";
      std::cerr << "finish=" << ReasonName(msg.finish_reason())
                << " prompt_tokens=" << msg.usage().prompt_tokens()
                << " completion_tokens=" << msg.usage().completion_tokens()
                << " request_id=" << request_id << " time=" << absl::FormatDuration(absl::Now() - start)
                << "\n";
    }
  }
  return Report(reader->Finish(), ctx);
}

void PrintAdapter(const adapterd::v1::AdapterInfo& a) {
  std::cout << a.adapter_id() << "  "
            << (a.state() == adapterd::v1::ADAPTER_STATE_READY ? "ready" : "loading") << "  "
            << a.type();
  if (a.ranks_size() > 0) std::cout << "  ranks=" << absl::StrJoin(a.ranks(), ",");
  if (a.target_modules_size() > 0) std::cout << "  targets=" << absl::StrJoin(a.target_modules(), ",");
  if (a.feedforward_modules_size() > 0) {
    std::cout << "  feedforward=" << absl::StrJoin(a.feedforward_modules(), ",");
  }
  if (a.bottleneck_widths_size() > 0) {
    std::cout << "  widths=" << absl::StrJoin(a.bottleneck_widths(), ",")
              << "  locations=" << absl::StrJoin(a.locations(), ",") << "  act=" << a.non_linearity()
              << (a.parallel() ? "  parallel" : "");
  }
  if (a.num_virtual_tokens() > 0) std::cout << "  virtual_tokens=" << a.num_virtual_tokens();
  std::cout << "  bytes=" << a.bytes()
            << "  load_s=" << a.load_seconds() << "  requests=" << a.requests_served()
            << "  tokens=" << a.tokens_generated() << "  source=" << a.source();
  if (!a.tier().empty()) std::cout << "  tier=" << a.tier() << (a.pinned() ? "  pinned" : "");
  std::cout << "\n";
}

void SetDeadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(
                       static_cast<int64_t>(absl::GetFlag(FLAGS_timeout_seconds) * 1000)));
}

int Admin(const std::string& cmd, const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = adapterd::v1::Admin::NewStub(channel);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  Authenticate(ctx);
  const std::string id = absl::GetFlag(FLAGS_id);
  if (cmd == "list") {
    adapterd::v1::ListAdaptersResponse resp;
    grpc::Status st = stub->ListAdapters(&ctx, {}, &resp);
    if (int rc = Report(st, ctx); rc != 0) return rc;
    for (const auto& a : resp.adapters()) PrintAdapter(a);
    return 0;
  }
  if (cmd == "get") {
    adapterd::v1::GetAdapterRequest req;
    req.set_adapter_id(id);
    adapterd::v1::AdapterInfo info;
    grpc::Status st = stub->GetAdapter(&ctx, req, &info);
    if (int rc = Report(st, ctx); rc != 0) return rc;
    PrintAdapter(info);
    return 0;
  }
  if (cmd == "unload") {
    adapterd::v1::UnloadAdapterRequest req;
    req.set_adapter_id(id);
    req.set_keep_on_disk(absl::GetFlag(FLAGS_keep_on_disk));
    adapterd::v1::UnloadAdapterResponse resp;
    grpc::Status st = stub->UnloadAdapter(&ctx, req, &resp);
    if (int rc = Report(st, ctx); rc != 0) return rc;
    std::cout << (absl::GetFlag(FLAGS_keep_on_disk) ? "offloaded " : "unloaded ") << id << "\n";
    return 0;
  }
  adapterd::v1::AdapterInfo info;
  grpc::Status st;
  if (cmd == "load") {
    adapterd::v1::LoadAdapterRequest req;
    req.set_adapter_id(id);
    req.set_path(absl::GetFlag(FLAGS_path));
    req.set_replace(absl::GetFlag(FLAGS_replace));
    req.set_pin(absl::GetFlag(FLAGS_pin));
    st = stub->LoadAdapter(&ctx, req, &info);
  } else {  // upload
    auto writer = stub->UploadAdapter(&ctx, &info);
    adapterd::v1::UploadAdapterRequest msg;
    msg.mutable_header()->set_adapter_id(id);
    msg.mutable_header()->set_replace(absl::GetFlag(FLAGS_replace));
    msg.mutable_header()->set_pin(absl::GetFlag(FLAGS_pin));
    bool ok = writer->Write(msg);
    // PEFT saves adapter_model.safetensors, AdapterHub adapter.safetensors.
    const std::string dir = absl::GetFlag(FLAGS_path);
    const char* weights = std::ifstream(dir + "/adapter_model.safetensors") ? "adapter_model.safetensors"
                          : std::ifstream(dir + "/adapter.safetensors")     ? "adapter.safetensors"
                                                                            : "adapter_model.safetensors";
    for (const char* name : {"adapter_config.json", weights}) {
      std::ifstream in(dir + "/" + name, std::ios::binary);
      if (!in) {
        std::cerr << "error: cannot read " << absl::GetFlag(FLAGS_path) << "/" << name << "\n";
        return 2;
      }
      std::string buf(1 << 20, '\0');  // 1 MiB chunks stay under message limits
      while (ok && in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        const std::streamsize n = in.gcount();
        if (n <= 0) break;
        msg.Clear();
        msg.mutable_chunk()->set_file_name(name);
        msg.mutable_chunk()->set_data(buf.data(), static_cast<size_t>(n));
        ok = writer->Write(msg);
      }
    }
    writer->WritesDone();
    st = writer->Finish();
  }
  if (int rc = Report(st, ctx); rc != 0) return rc;
  PrintAdapter(info);
  return 0;
}

int Health(const std::shared_ptr<grpc::Channel>& channel) {
  // grpc.health.v1 via a generic unary call, to avoid depending on its generated code.
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  // HealthCheckRequest{service = 1}: tag 0x0a, length, bytes.
  std::string service = absl::GetFlag(FLAGS_service), req_bytes;
  if (!service.empty()) {
    req_bytes.push_back(0x0a);
    req_bytes.push_back(static_cast<char>(service.size()));
    req_bytes += service;
  }
  grpc::Slice slice(req_bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   std::lock_guard<std::mutex> l(mu);
                   status = std::move(s);
                   done = true;
                   cv.notify_one();
                 });
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return done; });
  if (int rc = Report(status, ctx); rc != 0) return rc;
  std::vector<grpc::Slice> slices;
  (void)response.Dump(&slices);
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  const int value = bytes.size() >= 2 && bytes[0] == 0x08 ? bytes[1] : 0;
  const char* names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
  std::cout << (value >= 0 && value <= 3 ? names[value] : "UNKNOWN") << "\n";
  return value == 1 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "adapterctl COMMAND [flags]\n"
      "Commands:\n"
      "  generate  --prompt=IDS [--adapter=ID] [--max_new_tokens=N] [--unary] ...\n"
      "  load      --id=ID --path=DIR_ON_SERVER [--replace]\n"
      "  upload    --id=ID --path=LOCAL_DIR [--replace]\n"
      "  unload    --id=ID\n"
      "  get       --id=ID\n"
      "  list\n"
      "  health    [--service=NAME]");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "adapterctl.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  const std::string cmd = args[1];
  auto channel = Connect(absl::GetFlag(FLAGS_addr));
  if (cmd == "generate") return Generate(channel);
  if (cmd == "health") return Health(channel);
  if (cmd == "load" || cmd == "upload" || cmd == "unload" || cmd == "get" || cmd == "list") {
    const std::string admin = absl::GetFlag(FLAGS_admin_addr);
    return Admin(cmd, admin.empty() ? channel
                                    : Connect(admin));
  }
  std::cerr << "unknown command '" << cmd << "'\n" << absl::ProgramUsageMessage() << "\n";
  return 2;
}
