#include "tests/support/clients.h"

#include <iostream>

#include "absl/time/clock.h"

namespace adapterd::testing {

std::shared_ptr<grpc::Channel> Connect(const std::string& address, absl::Duration wait) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + wait))) {
    std::cerr << "channel to " << address << " not connected after " << absl::FormatDuration(wait) << "\n";
  }
  return channel;
}

grpc::Status UploadFiles(v1::Admin::Stub& admin, const std::string& id,
                         const std::map<std::string, std::string>& files, size_t chunk_bytes, bool pin) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  v1::AdapterInfo info;
  auto w = admin.UploadAdapter(&ctx, &info);
  v1::UploadAdapterRequest msg;
  msg.mutable_header()->set_adapter_id(id);
  msg.mutable_header()->set_pin(pin);
  bool ok = w->Write(msg);
  for (const auto& [name, data] : files) {
    size_t off = 0;
    do {  // an empty file still sends one chunk
      msg.Clear();
      msg.mutable_chunk()->set_file_name(name);
      msg.mutable_chunk()->set_data(data.substr(off, chunk_bytes));
      ok = ok && w->Write(msg);
      off += chunk_bytes;
    } while (ok && off < data.size());
  }
  if (ok) w->WritesDone();
  return w->Finish();
}

grpc::Status Unload(v1::Admin::Stub& admin, const std::string& id, bool keep_on_disk) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  v1::UnloadAdapterRequest req;
  req.set_adapter_id(id);
  req.set_keep_on_disk(keep_on_disk);
  v1::UnloadAdapterResponse resp;
  return admin.UnloadAdapter(&ctx, req, &resp);
}

v1::GenerateRequest GreedyRequest(const std::string& adapter, std::vector<uint32_t> prompt, int max_new_tokens) {
  v1::GenerateRequest req;
  req.set_adapter_id(adapter);
  for (uint32_t t : prompt) req.add_prompt_token_ids(t);
  req.mutable_sampling()->set_max_new_tokens(max_new_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  return req;
}

StreamResult StreamTokens(v1::Inference::Stub& stub, const v1::GenerateRequest& req, bool cancel_after_first,
                          absl::Duration deadline) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  auto reader = stub.GenerateStream(&ctx, req);
  v1::GenerateStreamResponse msg;
  StreamResult out;
  while (reader->Read(&msg)) {
    out.tokens.insert(out.tokens.end(), msg.token_ids().begin(), msg.token_ids().end());
    if (cancel_after_first && !out.tokens.empty()) {
      ctx.TryCancel();
      while (reader->Read(&msg)) {
      }
      break;
    }
  }
  out.status = reader->Finish();
  return out;
}

}  // namespace adapterd::testing
