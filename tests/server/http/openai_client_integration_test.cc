// The HTTP API against the real `openai` Python client, and under load. A
// tiny Llama with a trained tokenizer and chat template
// (tests/conformance/text_reference.py) and two LoRAs are served by the real
// server; completions and chats, whole and streamed, through the base and
// both adapters, must give the gRPC API's text for the same greedy request.
// Then 500 concurrent SSE streams must each carry the right text while the
// server's thread count stays where it was.
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/clients.h"
#include "tests/support/http_client.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd {
namespace {

using nlohmann::json;
using testing::ServerProcess;

constexpr int kMaxTokens = 12;
constexpr char kBase[] = "model";  // the checkpoint directory's name
constexpr char kKey[] = "sk-adapterd-test";

json Requests() {
  return {{"models", {kBase, "lora", "lora2"}},
          {"max_tokens", kMaxTokens},
          {"completions", {"The adapter serves many fine-tunes at once.", "Здравствуй, мир! 🙂"}},
          {"chats",
           {json::array({{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "What is a LoRA?"}}}),
            json::array({{{"role", "user"}, {"content", "hi"}}})}}};
}

// The checkpoint with a tokenizer and chat template and its two LoRAs,
// made once per test binary.
const std::string& TextModelDir() {
  static const std::string* dir = [] {
    auto* d = new std::string(testing::MakeTempDir("http-text"));
    absl::StatusOr<std::string> py = testing::ReferencePython();
    if (!py.ok()) return d;
    const std::string src = testing::SourceDir() + "/tests/conformance/";
    absl::StatusOr<std::string> made = testing::RunCommand(absl::StrCat(*py, " ", src, "text_reference.py make ", *d));
    EXPECT_TRUE(made.ok()) << made.status();
    absl::StatusOr<std::string> lora2 = testing::RunCommand(absl::StrCat(
        *py, " ", src, "peft_reference.py make-lora --model ", *d, "/model --out ", *d, "/lora2 --seed 12"));
    EXPECT_TRUE(lora2.ok()) << lora2.status();
    return d;
  }();
  return *dir;
}

int64_t ThreadCount(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  int64_t n = -1;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(8)), &n);
  }
  return n;
}

class OpenAiClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ADAPTERD_REQUIRE_REFERENCE();
    const std::string& dir = TextModelDir();
    ASSERT_TRUE(std::filesystem::exists(dir + "/lora2/adapter_config.json")) << "the text model was not made";
    std::ofstream(dir + "/key") << kKey << "\n";
    auto s = ServerProcess::Start({"--model=" + dir + "/model", "--inference_token_file=" + dir + "/key"});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    // One adapter through the gRPC Admin API, one through vLLM's endpoint.
    auto admin = v1::Admin::NewStub(testing::Connect(server_->grpc_address()));
    grpc::ClientContext ctx;
    v1::LoadAdapterRequest load;
    load.set_adapter_id("lora");
    load.set_path(dir + "/lora");
    v1::AdapterInfo info;
    grpc::Status st = admin->LoadAdapter(&ctx, load, &info);
    ASSERT_TRUE(st.ok()) << st.error_message();
    absl::StatusOr<testing::HttpReply> r =
        testing::HttpCall(server_->http_address(), "POST", "/v1/load_lora_adapter",
                          json{{"lora_name", "lora2"}, {"lora_path", dir + "/lora2"}}.dump());
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, 200) << r->body;
    inference_ = v1::Inference::NewStub(testing::Connect(server_->grpc_address()));
  }

  // The gRPC API's text for the same greedy request; `adapters` composes
  // ([{"id", "weight"}], with model kBase).
  std::string GrpcText(const std::string& model, const json& prompt, const json& adapters = json::array()) {
    v1::GenerateRequest req;
    if (model != kBase) req.set_adapter_id(model);
    for (const json& a : adapters) {
      v1::AdapterWeight* w = req.add_adapters();
      w->set_adapter_id(a["id"].get<std::string>());
      w->set_weight(a["weight"].get<float>());
    }
    if (prompt.is_string()) {
      req.set_prompt_text(prompt.get<std::string>());
    } else {
      for (const json& m : prompt) {
        auto* msg = req.mutable_chat()->add_messages();
        msg->set_role(m["role"].get<std::string>());
        msg->set_content(m["content"].get<std::string>());
      }
      req.mutable_chat()->set_add_generation_prompt(true);
    }
    req.mutable_sampling()->set_max_new_tokens(kMaxTokens);
    req.mutable_sampling()->set_ignore_eos(true);
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", absl::StrCat("Bearer ", kKey));
    v1::GenerateResponse resp;
    grpc::Status st = inference_->Generate(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.text();
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::Inference::Stub> inference_;
};

TEST_F(OpenAiClientTest, TheOpenAiClientGetsTheGrpcApisText) {
  const std::string dir = testing::MakeTempDir("openai-client");
  const json requests = Requests();
  std::ofstream(dir + "/requests.json") << requests.dump();
  absl::StatusOr<std::string> py = testing::ReferencePython();
  ASSERT_TRUE(py.ok());
  absl::StatusOr<std::string> ran = testing::RunCommand(
      absl::StrCat(*py, " ", testing::SourceDir(), "/tests/server/http/openai_client_check.py http://",
                   server_->http_address(), "/v1 ", kKey, " ", dir, "/requests.json ", dir, "/out.json"));
  ASSERT_TRUE(ran.ok()) << ran.status() << "\n" << server_->Log().substr(0, 4000);
  std::ifstream in(dir + "/out.json");
  const json out = json::parse(in);

  std::set<std::string> texts;
  for (const std::string model : {kBase, "lora", "lora2"}) {
    for (size_t i = 0; i < requests["completions"].size(); ++i) {
      const json& c = out["completions"][model][i];
      const std::string want = GrpcText(model, requests["completions"][i]);
      EXPECT_EQ(c["text"], want) << model << " completion " << i;
      EXPECT_EQ(c["stream_text"], want) << model << " streamed completion " << i;
      EXPECT_EQ(c["finish_reason"], "length");
      EXPECT_EQ(c["stream_finish_reason"], "length");
      EXPECT_EQ(c["usage"]["completion_tokens"], kMaxTokens);
      EXPECT_EQ(c["stream_usage"], c["usage"]);
      EXPECT_EQ(c["model"], model);
      EXPECT_EQ(c["object"], "text_completion");
      texts.insert(want);
    }
    for (size_t i = 0; i < requests["chats"].size(); ++i) {
      const json& c = out["chats"][model][i];
      const std::string want = GrpcText(model, requests["chats"][i]);
      EXPECT_EQ(c["text"], want) << model << " chat " << i;
      EXPECT_EQ(c["stream_text"], want) << model << " streamed chat " << i;
      EXPECT_EQ(c["role"], "assistant");
      EXPECT_EQ(c["stream_roles"], json::array({"assistant"}));
      EXPECT_EQ(c["stream_finish_reason"], "length");
      EXPECT_TRUE(c["finish_null_until_last"].get<bool>());
      EXPECT_EQ(c["object"], "chat.completion");
      texts.insert(want);
    }
  }
  // Base and adapters differ, so a mix-up would show.
  EXPECT_EQ(texts.size(), 3 * (requests["completions"].size() + requests["chats"].size()));

  std::map<std::string, json> listed;
  for (const json& m : out["models"]) listed[m["id"].get<std::string>()] = m;
  EXPECT_EQ(listed.size(), 3u) << out["models"].dump();
  EXPECT_EQ(listed["lora"]["parent"], kBase);
  EXPECT_EQ(listed["lora2"]["parent"], kBase);
  EXPECT_EQ(out["retrieve"], "lora2");
  EXPECT_EQ(out["unknown_model"]["class"], "NotFoundError") << out["unknown_model"].dump();
  EXPECT_EQ(out["bad_key"]["class"], "AuthenticationError") << out["bad_key"].dump();
  EXPECT_EQ(out["bad_request"]["class"], "BadRequestError") << out["bad_request"].dump();
  EXPECT_EQ(out["bad_request"]["body"]["param"], "max_tokens");
}

// A composition of both adapters over HTTP (adapterd's `adapters`
// extension), in completions and chats: the gRPC API's composed text, which
// differs from the base's and each adapter's.
TEST_F(OpenAiClientTest, ComposedCompletionsAndChatsGetTheGrpcApisText) {
  const json adapters = {{{"id", "lora"}, {"weight", 0.75}}, {{"id", "lora2"}, {"weight", -0.5}}};
  const json requests = Requests();
  const json prompts = {requests["completions"][0], requests["chats"][0]};
  for (const json& prompt : prompts) {
    const bool chat = !prompt.is_string();
    json body = {{"model", kBase}, {"max_tokens", kMaxTokens}, {"temperature", 0}, {"ignore_eos", true},
                 {"adapters", adapters}};
    body[chat ? "messages" : "prompt"] = prompt;
    absl::StatusOr<testing::HttpReply> r =
        testing::HttpCall(server_->http_address(), "POST", chat ? "/v1/chat/completions" : "/v1/completions",
                          body.dump(), {{"Authorization", absl::StrCat("Bearer ", kKey)}});
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->status, 200) << r->body;
    const json choice = json::parse(r->body)["choices"][0];
    const std::string text = chat ? choice["message"]["content"].get<std::string>() : choice["text"].get<std::string>();
    EXPECT_EQ(text, GrpcText(kBase, prompt, adapters)) << prompt.dump();
    for (const std::string model : {kBase, "lora", "lora2"}) EXPECT_NE(text, GrpcText(model, prompt)) << model;
  }
}

// 500 SSE streams at once on loopback, each with its text checked, through
// the base and both adapters; the server's threads are counted before and
// during.
TEST_F(OpenAiClientTest, FiveHundredConcurrentStreamsCompleteWithBoundedThreads) {
  constexpr int kStreams = 500;
  const std::vector<std::string> prompts = {"One adapter per tenant.", "Streams share the batch.",
                                            "Κάθε αίτημα έχει το δικό του μοντέλο."};
  const std::vector<std::string> models = {kBase, "lora", "lora2"};
  const std::string auth = absl::StrCat("Bearer ", kKey);
  // What each (prompt, model) must produce, asked once, whole.
  std::map<std::pair<size_t, size_t>, std::string> want;
  for (size_t p = 0; p < prompts.size(); ++p) {
    for (size_t m = 0; m < models.size(); ++m) {
      json body = {{"model", models[m]}, {"prompt", prompts[p]}, {"max_tokens", 16}, {"temperature", 0},
                   {"ignore_eos", true}};
      absl::StatusOr<testing::HttpReply> r =
          testing::HttpCall(server_->http_address(), "POST", "/v1/completions", body.dump(), {{"Authorization", auth}});
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->status, 200) << r->body;
      want[{p, m}] = json::parse(r->body)["choices"][0]["text"].get<std::string>();
    }
  }
  const int64_t threads_before = ThreadCount(server_->pid());
  std::vector<std::string> bodies;
  for (int i = 0; i < kStreams; ++i) {
    bodies.push_back(json{{"model", models[i % models.size()]}, {"prompt", prompts[i % prompts.size()]},
                          {"max_tokens", 16}, {"temperature", 0}, {"ignore_eos", true}, {"stream", true}}
                         .dump());
  }
  int64_t threads_peak = threads_before;
  double running_peak = 0;
  auto sample = [&] {
    threads_peak = std::max(threads_peak, ThreadCount(server_->pid()));
    absl::StatusOr<std::string> m = testing::HttpGet(server_->metrics_address(), "/metrics");
    if (m.ok()) {
      absl::StatusOr<double> c = testing::MetricSum(*m, "adapterd_http_connections");
      if (c.ok()) running_peak = std::max(running_peak, *c);
    }
  };
  absl::StatusOr<testing::ConcurrentResult> result = testing::RunConcurrentStreams(
      server_->http_address(), "/v1/completions", bodies, absl::Seconds(600), sample, {{"Authorization", auth}});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->completed, kStreams);
  int correct = 0;
  for (int i = 0; i < kStreams; ++i) {
    absl::StatusOr<testing::HttpReply> r = testing::ParseResponse(result->responses[i]);
    ASSERT_TRUE(r.ok()) << "stream " << i << ": " << r.status();
    ASSERT_EQ(r->status, 200) << r->body;
    std::string text;
    for (const std::string& e : testing::SseData(r->body)) {
      if (e == "[DONE]") continue;
      const json event = json::parse(e);
      for (const json& c : event["choices"]) text += c["text"].get<std::string>();
    }
    const std::string& expected = want[{i % prompts.size(), i % models.size()}];
    if (text == expected) {
      ++correct;
    } else if (correct + 1 == i + 1 - correct) {  // report the first mismatch only
      ADD_FAILURE() << "stream " << i << " got '" << text << "', want '" << expected << "'\n" << r->body.substr(0, 3000);
    }
  }
  EXPECT_EQ(correct, kStreams);
  std::cout << "server threads: " << threads_before << " before, at most " << threads_peak << " during "
            << kStreams << " concurrent streams (peak " << running_peak << " open HTTP connections)\n";
  RecordProperty("threads_before", static_cast<int>(threads_before));
  RecordProperty("threads_peak", static_cast<int>(threads_peak));
  EXPECT_GE(running_peak, 100) << "the streams did not overlap";
  EXPECT_LE(threads_peak, threads_before + 2) << "threads grew with the number of streams";
}

}  // namespace
}  // namespace adapterd
