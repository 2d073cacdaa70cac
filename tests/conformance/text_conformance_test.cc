// Text in, text out, end to end, against transformers computed live: a tiny
// Llama saved with a trained byte-level BPE tokenizer and a chat template
// (tests/conformance/text_reference.py), served by the real server. For text
// prompts and chats, through the base and through a LoRA, the server's token
// ids equal the Hugging Face tokenizer's, its greedy ids equal generate's, and
// its text equals tokenizer.decode of them; streamed text deltas add up to the
// same text and are each valid UTF-8. Stop strings: one split across tokens,
// one a prefix of another, one that never matches.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/clients.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

using nlohmann::json;

constexpr int kNewTokens = 24;

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

bool CharStart(const std::string& s, size_t i) {
  return i == s.size() || (static_cast<unsigned char>(s[i]) >> 6) != 2;
}

// The requests, as the reference script and as protos.
json Requests() {
  return json::array({
      {{"text", "The adapter serves many fine-tunes at once."}},
      {{"text", "Здравствуй, мир! 你好，世界。 مرحبا 🙂"}},
      {{"messages", json::array({{{"role", "system"}, {"content", "Be brief."}},
                                 {{"role", "user"}, {"content", "What is a LoRA?"}}})},
       {"add_generation_prompt", true}},
      {{"messages", json::array({{{"role", "user"}, {"content", "hi"}},
                                 {{"role", "assistant"}, {"content", "hello"}},
                                 {{"role", "user"}, {"content", "again"}}})},
       {"add_generation_prompt", false}},
  });
}

void SetPrompt(const json& r, v1::GenerateRequest* req) {
  if (r.contains("text")) {
    req->set_prompt_text(r["text"].get<std::string>());
    return;
  }
  for (const auto& m : r["messages"]) {
    auto* msg = req->mutable_chat()->add_messages();
    msg->set_role(m["role"].get<std::string>());
    msg->set_content(m["content"].get<std::string>());
  }
  req->mutable_chat()->set_add_generation_prompt(r["add_generation_prompt"].get<bool>());
}

class TextConformanceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto py = testing::ReferencePython();
    if (!py.ok()) return;
    dir_ = new std::string(testing::MakeTempDir("text-conformance"));
    const std::string script = testing::SourceDir() + "/tests/conformance/text_reference.py";
    auto made = testing::RunCommand(absl::StrCat(*py, " ", script, " make ", *dir_));
    ASSERT_TRUE(made.ok()) << made.status();
    std::ofstream(*dir_ + "/requests.json") << Requests().dump();
    auto ref = testing::RunCommand(absl::StrCat(*py, " ", script, " reference ", *dir_, "/model ", *dir_, "/lora ",
                                                *dir_, "/requests.json ", *dir_, "/reference.json --new-tokens ",
                                                kNewTokens));
    ASSERT_TRUE(ref.ok()) << ref.status();
    std::ifstream in(*dir_ + "/reference.json");
    reference_ = new json(json::parse(in));
  }
  void SetUp() override {
    ADAPTERD_REQUIRE_REFERENCE();
    ASSERT_NE(reference_, nullptr) << "the reference could not be computed";
    auto s = testing::ServerProcess::Start({"--model=" + *dir_ + "/model"});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
    auto channel = testing::Connect(server_->grpc_address());
    inference_ = v1::Inference::NewStub(channel);
    auto admin = v1::Admin::NewStub(channel);
    grpc::ClientContext ctx;
    v1::LoadAdapterRequest load;
    load.set_adapter_id("lora");
    load.set_path(*dir_ + "/lora");
    v1::AdapterInfo info;
    grpc::Status st = admin->LoadAdapter(&ctx, load, &info);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }

  v1::GenerateRequest Greedy(const json& r, const std::string& adapter) {
    v1::GenerateRequest req;
    req.set_adapter_id(adapter);
    SetPrompt(r, &req);
    req.mutable_sampling()->set_max_new_tokens(kNewTokens);
    req.mutable_sampling()->set_ignore_eos(true);
    return req;
  }
  v1::GenerateResponse Generate(const v1::GenerateRequest& req) {
    grpc::ClientContext ctx;
    v1::GenerateResponse resp;
    grpc::Status st = inference_->Generate(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  // The streamed text deltas.
  std::vector<std::string> Stream(const v1::GenerateRequest& req, v1::GenerateStreamResponse* last) {
    grpc::ClientContext ctx;
    auto reader = inference_->GenerateStream(&ctx, req);
    std::vector<std::string> deltas;
    v1::GenerateStreamResponse msg;
    while (reader->Read(&msg)) {
      if (!msg.text().empty()) deltas.push_back(msg.text());
      *last = msg;
    }
    grpc::Status st = reader->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
    return deltas;
  }

  static std::string* dir_;
  static json* reference_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<v1::Inference::Stub> inference_;
};

std::string* TextConformanceTest::dir_ = nullptr;
json* TextConformanceTest::reference_ = nullptr;

TEST_F(TextConformanceTest, PromptsTokenizeAndGenerateAsTransformersDoes) {
  const json requests = Requests();
  for (size_t i = 0; i < requests.size(); ++i) {
    const json& want = (*reference_)[i];
    v1::TokenizeRequest tr;
    if (requests[i].contains("text")) {
      tr.set_text(requests[i]["text"].get<std::string>());
    } else {
      *tr.mutable_chat() = Greedy(requests[i], "").chat();
    }
    grpc::ClientContext ctx;
    v1::TokenizeResponse ids;
    ASSERT_TRUE(inference_->Tokenize(&ctx, tr, &ids).ok());
    EXPECT_EQ(std::vector<uint32_t>(ids.token_ids().begin(), ids.token_ids().end()),
              want["ids"].get<std::vector<uint32_t>>())
        << "request " << i;
    for (const char* adapter : {"", "lora"}) {
      const json& gen = want[*adapter ? "lora" : "base"];
      v1::GenerateResponse resp = Generate(Greedy(requests[i], adapter));
      EXPECT_EQ(std::vector<uint32_t>(resp.token_ids().begin(), resp.token_ids().end()),
                gen["ids"].get<std::vector<uint32_t>>())
          << "request " << i << " through '" << adapter << "'";
      EXPECT_EQ(resp.text(), gen["text"].get<std::string>()) << "request " << i << " through '" << adapter << "'";
      EXPECT_EQ(resp.usage().prompt_tokens(), want["ids"].size());
      v1::GenerateStreamResponse last;
      std::vector<std::string> deltas = Stream(Greedy(requests[i], adapter), &last);
      std::string joined;
      for (const std::string& d : deltas) {
        EXPECT_TRUE(ValidUtf8(d)) << "a delta ends inside a UTF-8 sequence";
        joined += d;
      }
      EXPECT_EQ(joined, resp.text()) << "request " << i << " through '" << adapter << "'";
    }
  }
  // The two paths differ, so a mix-up would show.
  EXPECT_NE((*reference_)[0]["base"]["ids"], (*reference_)[0]["lora"]["ids"]);
}

TEST_F(TextConformanceTest, StopStringsEndTheTextWhereTheyBegin) {
  const json r = Requests()[0];
  const std::string full = (*reference_)[0]["base"]["text"].get<std::string>();
  // A stop string from the middle of the text whose first occurrence is
  // where it is taken from, at character boundaries, three characters long
  // or more: it spans more than one token of this tokenizer.
  size_t at = std::string::npos, len = 0;
  for (size_t k = full.size() / 3; k < full.size() && at == std::string::npos; ++k) {
    if (!CharStart(full, k)) continue;
    for (size_t n = 6; k + n <= full.size() && n < 16; ++n) {
      if (CharStart(full, k + n) && full.find(full.substr(k, n)) == k && full.substr(k, n).find('\xef') == std::string::npos) {
        at = k;
        len = n;
        break;
      }
    }
  }
  ASSERT_NE(at, std::string::npos) << "no usable stop string in: " << full;
  const std::string stop = full.substr(at, len);
  std::string shorter;
  for (size_t n = 2; n < len; ++n) {
    if (CharStart(stop, n)) {
      shorter = stop.substr(0, n);
      break;
    }
  }
  struct Case {
    std::vector<std::string> stops;
    bool include;
    std::string want_text, want_stop;
  };
  const std::vector<Case> cases = {
      {{stop}, false, full.substr(0, at), stop},
      {{stop}, true, full.substr(0, at + len), stop},
      // A prefix of the other: it completes first, wherever it first occurs.
      {{stop, shorter}, false, full.substr(0, full.find(shorter)), shorter},
      {{"\x01never"}, false, full, ""},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest req = Greedy(r, "");
    for (const auto& s : c.stops) req.mutable_sampling()->add_stop(s);
    req.mutable_sampling()->set_include_stop_string(c.include);
    v1::GenerateResponse resp = Generate(req);
    EXPECT_EQ(resp.text(), c.want_text) << "stops " << c.stops.size() << " include " << c.include;
    EXPECT_EQ(resp.stop_string(), c.want_stop);
    EXPECT_EQ(resp.finish_reason(), c.want_stop.empty() ? v1::FINISH_REASON_LENGTH : v1::FINISH_REASON_STOP);
    v1::GenerateStreamResponse last;
    std::vector<std::string> deltas = Stream(req, &last);
    std::string joined;
    for (const auto& d : deltas) joined += d;
    EXPECT_EQ(joined, c.want_text) << "streamed text holds back what could begin a stop string";
    EXPECT_EQ(last.stop_string(), c.want_stop);
  }
}

TEST_F(TextConformanceTest, BadTextRequestsAreRefusedNamingWhatIsWrong) {
  v1::GenerateRequest both = Greedy(Requests()[0], "");
  both.add_prompt_token_ids(5);
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  grpc::Status st = inference_->Generate(&ctx, both, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), ::testing::HasSubstr("exactly one of prompt_token_ids, prompt_text and chat"));

  v1::GenerateRequest role = Greedy(Requests()[2], "");
  role.mutable_chat()->mutable_messages(0)->set_role("narrator");
  grpc::ClientContext ctx2;
  st = inference_->Generate(&ctx2, role, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), ::testing::HasSubstr("unknown role narrator"));

  v1::GenerateRequest too_many = Greedy(Requests()[0], "");
  for (int i = 0; i < 40; ++i) too_many.mutable_sampling()->add_stop(absl::StrCat("s", i));
  grpc::ClientContext ctx3;
  st = inference_->Generate(&ctx3, too_many, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), ::testing::HasSubstr("sampling.stop"));

  v1::GenerateRequest bad_utf8 = Greedy(Requests()[0], "");
  bad_utf8.set_prompt_text(std::string("abc\xff", 4));
  grpc::ClientContext ctx4;
  st = inference_->Generate(&ctx4, bad_utf8, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_THAT(st.error_message(), ::testing::HasSubstr("byte offset 3"));
  v1::GenerateRequest bad_chat = Greedy(Requests()[2], "");
  bad_chat.mutable_chat()->mutable_messages(1)->set_content(std::string("\xc3(", 2));
  grpc::ClientContext ctx5;
  st = inference_->Generate(&ctx5, bad_chat, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_THAT(st.error_message(), ::testing::HasSubstr("chat.messages[1].content"));

  // The server keeps serving.
  EXPECT_EQ(Generate(Greedy(Requests()[0], "")).token_ids_size(), kNewTokens);
}

}  // namespace
}  // namespace adapterd
