#include "server/cli/text_commands.h"

#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "server/cli/cli_common.h"

ABSL_FLAG(std::string, prompt, "", "generate/classify/detokenize: prompt token ids, comma-separated");
ABSL_FLAG(std::string, text, "", "generate/classify/tokenize: prompt text, tokenized by the server");
ABSL_FLAG(std::string, adapter, "", "Adapter id (empty = base model)");
ABSL_FLAG(std::vector<std::string>, adapters, {},
          "generate/chat: compose LoRA adapters over the base model, as ID:WEIGHT pairs, comma-separated "
          "(a bare ID has weight 1); instead of --adapter");
ABSL_FLAG(uint32_t, max_new_tokens, 16, "Tokens to generate (chat: per reply, default 256 there)");
ABSL_FLAG(double, temperature, 0, "Sampling temperature (0 = greedy)");
ABSL_FLAG(uint32_t, top_k, 0, "Top-k filter (0 = off)");
ABSL_FLAG(double, top_p, 1, "Top-p filter (1 = off)");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed (0 = random)");
ABSL_FLAG(std::string, stop, "", "Stop token ids, comma-separated");
ABSL_FLAG(std::vector<std::string>, stop_strings, {}, "Stop strings, comma-separated");
ABSL_FLAG(bool, ignore_eos, false, "Do not stop at the model's end-of-sequence token");
ABSL_FLAG(bool, logprobs, false, "Print the log-probability of each token");
ABSL_FLAG(bool, unary, false, "Use Generate instead of GenerateStream");
ABSL_FLAG(bool, print_text, false, "generate --prompt: print the text instead of the token ids");
ABSL_FLAG(bool, skip_special_tokens, true, "Leave special tokens out of returned text");
ABSL_FLAG(std::string, system, "", "chat: a system message to start the conversation with");

namespace adapterd::cli {
namespace {

// The adapter a router should send `req` to: its adapter, or the first of
// a composition.
std::string RoutingKey(const adapterd::v1::GenerateRequest& req) {
  if (!req.adapter_id().empty() || req.adapters().empty()) return req.adapter_id();
  return req.adapters(0).adapter_id();
}

// Fills sampling and adapter from the flags; false (after printing why) on a bad flag.
bool FillRequest(adapterd::v1::GenerateRequest& req, uint32_t max_new_tokens) {
  req.set_adapter_id(absl::GetFlag(FLAGS_adapter));
  req.set_skip_special_tokens(absl::GetFlag(FLAGS_skip_special_tokens));
  auto* s = req.mutable_sampling();
  s->set_max_new_tokens(max_new_tokens);
  s->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  s->set_top_k(absl::GetFlag(FLAGS_top_k));
  s->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  s->set_seed(absl::GetFlag(FLAGS_seed));
  s->set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  s->set_return_logprobs(absl::GetFlag(FLAGS_logprobs));
  for (const std::string& stop : absl::GetFlag(FLAGS_stop_strings)) s->add_stop(stop);
  for (const std::string& a : absl::GetFlag(FLAGS_adapters)) {
    adapterd::v1::AdapterWeight* w = req.add_adapters();
    const size_t colon = a.rfind(':');
    w->set_adapter_id(a.substr(0, colon));
    if (colon == std::string::npos) continue;
    float weight = 0;
    if (!absl::SimpleAtof(a.substr(colon + 1), &weight)) {
      std::cerr << "error: --adapters takes ID:WEIGHT pairs; '" << a << "' has no number after the colon\n";
      return false;
    }
    w->set_weight(weight);
  }
  if (!ParseIds(absl::GetFlag(FLAGS_stop), s->mutable_stop_token_ids())) {
    std::cerr << "error: --stop must be comma-separated token ids\n";
    return false;
  }
  return true;
}

void PrintFinish(const adapterd::v1::FinishReason reason, const adapterd::v1::Usage& usage,
                 const std::string& stop_string, const std::string& request_id, absl::Time start) {
  std::cerr << "finish=" << ReasonName(reason) << (stop_string.empty() ? "" : " stop_string=" + stop_string)
            << " prompt_tokens=" << usage.prompt_tokens() << " completion_tokens=" << usage.completion_tokens()
            << " request_id=" << request_id << " time=" << absl::FormatDuration(absl::Now() - start) << "\n";
}

// Streams one reply; writes text deltas (or ids) to `out`; *text gets the whole text.
int Stream(adapterd::v1::Inference::Stub& stub, const adapterd::v1::GenerateRequest& req, bool print_text,
           std::ostream& out, std::string* text, bool report_finish) {
  grpc::ClientContext ctx;
  Authenticate(ctx, RoutingKey(req));
  SetDeadline(ctx);
  const absl::Time start = absl::Now();
  auto reader = stub.GenerateStream(&ctx, req);
  adapterd::v1::GenerateStreamResponse msg;
  while (reader->Read(&msg)) {
    if (print_text) {
      out << msg.text() << std::flush;
      if (text != nullptr) text->append(msg.text());
    } else {
      for (int i = 0; i < msg.token_ids_size(); ++i) {
        out << msg.token_ids(i);
        if (i < msg.logprobs_size()) out << "(" << msg.logprobs(i) << ")";
        out << " " << std::flush;
      }
    }
    if (msg.finish_reason() != adapterd::v1::FINISH_REASON_UNSPECIFIED) {
      out << "\n" << std::flush;
      if (report_finish) PrintFinish(msg.finish_reason(), msg.usage(), msg.stop_string(), msg.request_id(), start);
    }
  }
  return Report(reader->Finish(), ctx);
}

}  // namespace

int GenerateCommand(const std::shared_ptr<grpc::Channel>& channel) {
  adapterd::v1::GenerateRequest req;
  const std::string text = absl::GetFlag(FLAGS_text);
  if (!text.empty()) {
    req.set_prompt_text(text);
  } else if (!ParseIds(absl::GetFlag(FLAGS_prompt), req.mutable_prompt_token_ids())) {
    std::cerr << "error: --prompt must be comma-separated token ids\n";
    return 2;
  }
  if (!FillRequest(req, absl::GetFlag(FLAGS_max_new_tokens))) return 2;
  const bool print_text = !text.empty() || absl::GetFlag(FLAGS_print_text);
  auto stub = adapterd::v1::Inference::NewStub(channel);
  if (!absl::GetFlag(FLAGS_unary)) return Stream(*stub, req, print_text, std::cout, nullptr, true);
  grpc::ClientContext ctx;
  Authenticate(ctx, RoutingKey(req));
  SetDeadline(ctx);
  const absl::Time start = absl::Now();
  adapterd::v1::GenerateResponse resp;
  grpc::Status st = stub->Generate(&ctx, req, &resp);
  if (int rc = Report(st, ctx); rc != 0) return rc;
  if (print_text) {
    std::cout << resp.text() << "\n";
  } else {
    std::cout << absl::StrJoin(resp.token_ids(), " ") << "\n";
  }
  if (resp.logprobs_size() > 0) std::cout << "logprobs: " << absl::StrJoin(resp.logprobs(), " ") << "\n";
  PrintFinish(resp.finish_reason(), resp.usage(), resp.stop_string(), resp.request_id(), start);
  return 0;
}

int ChatCommand(const std::shared_ptr<grpc::Channel>& channel, std::istream& in, std::ostream& out) {
  auto stub = adapterd::v1::Inference::NewStub(channel);
  adapterd::v1::Chat history;
  if (const std::string system = absl::GetFlag(FLAGS_system); !system.empty()) {
    auto* m = history.add_messages();
    m->set_role("system");
    m->set_content(system);
  }
  const uint32_t max_new_tokens =
      absl::GetFlag(FLAGS_max_new_tokens) == 16 ? 256 : absl::GetFlag(FLAGS_max_new_tokens);
  std::string line;
  while (true) {
    out << "> " << std::flush;
    if (!std::getline(in, line) || line == "/exit") break;
    if (line.empty()) continue;
    auto* user = history.add_messages();
    user->set_role("user");
    user->set_content(line);
    adapterd::v1::GenerateRequest req;
    *req.mutable_chat() = history;
    req.mutable_chat()->set_add_generation_prompt(true);
    if (!FillRequest(req, max_new_tokens)) return 2;
    std::string reply;
    if (int rc = Stream(*stub, req, /*print_text=*/true, out, &reply, /*report_finish=*/false); rc != 0) {
      history.mutable_messages()->RemoveLast();  // the turn failed; the user may try again
      continue;
    }
    auto* assistant = history.add_messages();
    assistant->set_role("assistant");
    assistant->set_content(reply);
  }
  out << "\n";
  return 0;
}

int TokenizeCommand(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = adapterd::v1::Inference::NewStub(channel);
  adapterd::v1::TokenizeRequest req;
  req.set_text(absl::GetFlag(FLAGS_text));
  grpc::ClientContext ctx;
  Authenticate(ctx);
  SetDeadline(ctx);
  adapterd::v1::TokenizeResponse resp;
  if (int rc = Report(stub->Tokenize(&ctx, req, &resp), ctx); rc != 0) return rc;
  std::cout << absl::StrJoin(resp.token_ids(), ",") << "\n";
  return 0;
}

int ClassifyCommand(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = adapterd::v1::Inference::NewStub(channel);
  adapterd::v1::ClassifyRequest req;
  req.set_adapter_id(absl::GetFlag(FLAGS_adapter));
  const std::string text = absl::GetFlag(FLAGS_text);
  if (!text.empty()) {
    req.set_prompt_text(text);
  } else if (!ParseIds(absl::GetFlag(FLAGS_prompt), req.mutable_prompt_token_ids())) {
    std::cerr << "error: --prompt must be comma-separated token ids\n";
    return 2;
  }
  grpc::ClientContext ctx;
  Authenticate(ctx, req.adapter_id());
  SetDeadline(ctx);
  adapterd::v1::ClassifyResponse resp;
  if (int rc = Report(stub->Classify(&ctx, req, &resp), ctx); rc != 0) return rc;
  for (const auto& s : resp.scores()) {
    std::cout << s.label() << "\t" << s.probability() << "\t(logit " << s.logit() << ")\n";
  }
  std::cerr << "prompt_tokens=" << resp.prompt_tokens() << " pooled_index=" << resp.pooled_index()
            << " request_id=" << resp.request_id() << "\n";
  return 0;
}

int DetokenizeCommand(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = adapterd::v1::Inference::NewStub(channel);
  adapterd::v1::DetokenizeRequest req;
  if (!ParseIds(absl::GetFlag(FLAGS_prompt), req.mutable_token_ids())) {
    std::cerr << "error: --prompt must be comma-separated token ids\n";
    return 2;
  }
  req.set_skip_special_tokens(absl::GetFlag(FLAGS_skip_special_tokens));
  grpc::ClientContext ctx;
  Authenticate(ctx);
  SetDeadline(ctx);
  adapterd::v1::DetokenizeResponse resp;
  if (int rc = Report(stub->Detokenize(&ctx, req, &resp), ctx); rc != 0) return rc;
  std::cout << resp.text() << "\n";
  return 0;
}

}  // namespace adapterd::cli
