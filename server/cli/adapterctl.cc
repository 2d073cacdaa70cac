// adapterctl: command-line client for adapterd.
//   adapterctl generate --prompt=1,2,3 | --text="..." [--max_new_tokens=16] [--adapter=ID | --adapters=ID:W,ID:W]
//              [--unary]
//   adapterctl chat [--adapter=ID] [--system="..."]      (interactive; /exit or end of input ends it)
//   adapterctl tokenize --text="..." | detokenize --prompt=1,2,3
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
#include "server/cli/cli_common.h"
#include "server/cli/text_commands.h"

ABSL_FLAG(std::string, service, "", "health: service name (empty = overall)");
ABSL_FLAG(std::string, admin_addr, "", "Admin address (empty = --addr)");
ABSL_FLAG(std::string, id, "", "load/upload/unload/get: adapter id");
ABSL_FLAG(std::string, path, "", "load: directory on the server; upload: local directory");
ABSL_FLAG(bool, replace, false, "load/upload: swap an adapter already loaded under --id");
ABSL_FLAG(bool, pin, false, "load/upload: keep the adapter on the device tier");
ABSL_FLAG(bool, keep_on_disk, false, "unload: keep it registered on disk, out of memory");

namespace {

using adapterd::cli::Authenticate;
using adapterd::cli::Connect;
using adapterd::cli::ReadFileOrDie;
using adapterd::cli::Report;
using adapterd::cli::SetDeadline;

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
  if (a.task_type() == "SEQ_CLS") std::cout << "  task=SEQ_CLS  labels=" << absl::StrJoin(a.labels(), ",");
  if (a.modules_to_save_size() > 0) std::cout << "  modules_to_save=" << absl::StrJoin(a.modules_to_save(), ",");
  if (a.trainable_tokens() > 0) std::cout << "  trainable_tokens=" << a.trainable_tokens();
  if (!a.bias().empty() && a.bias() != "none") std::cout << "  bias=" << a.bias();
  if (a.lora_bias()) std::cout << "  lora_bias";
  std::cout << "  bytes=" << a.bytes()
            << "  load_s=" << a.load_seconds() << "  requests=" << a.requests_served()
            << "  tokens=" << a.tokens_generated() << "  source=" << a.source();
  if (!a.tier().empty()) std::cout << "  tier=" << a.tier() << (a.pinned() ? "  pinned" : "");
  std::cout << "\n";
}

int Admin(const std::string& cmd, const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = adapterd::v1::Admin::NewStub(channel);
  grpc::ClientContext ctx;
  SetDeadline(ctx);
  const std::string id = absl::GetFlag(FLAGS_id);
  Authenticate(ctx, id);
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
      "  generate  --prompt=IDS | --text=TEXT [--adapter=ID] [--max_new_tokens=N] [--unary] ...\n"
      "  chat      [--adapter=ID] [--system=TEXT]   (one message per line; /exit ends)\n"
      "  classify  --adapter=ID --prompt=IDS | --text=TEXT   (a SEQ_CLS adapter)\n"
      "  tokenize  --text=TEXT\n"
      "  detokenize --prompt=IDS\n"
      "  load      --id=ID --path=DIR_ON_SERVER [--replace]\n"
      "  upload    --id=ID --path=LOCAL_DIR [--replace]\n"
      "  unload    --id=ID\n"
      "  get       --id=ID\n"
      "  list\n"
      "  health    [--service=NAME]");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "server/cli/");
  };
  absl::SetFlagsUsageConfig(usage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  const std::string cmd = args[1];
  auto channel = Connect(absl::GetFlag(FLAGS_addr));
  if (cmd == "generate") return adapterd::cli::GenerateCommand(channel);
  if (cmd == "chat") return adapterd::cli::ChatCommand(channel, std::cin, std::cout);
  if (cmd == "classify") return adapterd::cli::ClassifyCommand(channel);
  if (cmd == "tokenize") return adapterd::cli::TokenizeCommand(channel);
  if (cmd == "detokenize") return adapterd::cli::DetokenizeCommand(channel);
  if (cmd == "health") return Health(channel);
  if (cmd == "load" || cmd == "upload" || cmd == "unload" || cmd == "get" || cmd == "list") {
    const std::string admin = absl::GetFlag(FLAGS_admin_addr);
    return Admin(cmd, admin.empty() ? channel
                                    : Connect(admin));
  }
  std::cerr << "unknown command '" << cmd << "'\n" << absl::ProgramUsageMessage() << "\n";
  return 2;
}
