// POST /v1/classify on the real adapterd binary (demo model, token-id
// inputs): a sequence-classification adapter answers in vLLM's
// classification shape with the scores the gRPC Classify call gives;
// several inputs are several rows; the wrong kind of model, unknown models
// and malformed inputs get OpenAI's error objects with the right status and
// param. adapterctl classify prints the same scores. The scores themselves are checked against PEFT in
// tests/conformance/heads_conformance_test.cc.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/clients.h"
#include "tests/support/http_client.h"
#include "tests/support/reference_outputs.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using testing::HttpCall;
using testing::ServerProcess;

constexpr char kBase[] = "demo-llama-v1";
const std::vector<std::string> kLabels = {"neg", "neu", "pos"};

// A SEQ_CLS adapter for the demo model: a q/v LoRA and a 3-label score head
// strong enough that the labels differ, with id2label beside it.
std::string WriteClassifier() {
  testing::FakeAdapter a = testing::DemoLora({.r = 4, .seed = 70, .a_amplitude = 0.3f, .b_amplitude = 0.3f});
  a.config["task_type"] = "SEQ_CLS";
  a.config["modules_to_save"] = {"classifier", "score"};
  a.Add("base_model.model.score.weight", {3, testing::DemoModelConfig().hidden_size}, 71, 0.5f);
  const std::string dir = a.Write("http-cls");
  std::ofstream(dir + "/config.json") << R"({"id2label": {"0": "neg", "1": "neu", "2": "pos"}})";
  return dir;
}

class HttpClassifyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto s = ServerProcess::Start({});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = s->release();
    auto admin = v1::Admin::NewStub(testing::Connect(server_->grpc_address()));
    v1::AdapterInfo info;
    grpc::Status st = testing::LoadAdapterByPath(*admin, "cls", WriteClassifier(), &info);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(info.task_type(), "SEQ_CLS");
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static absl::StatusOr<testing::HttpReply> Post(const json& body) {
    return HttpCall(server_->http_address(), "POST", "/v1/classify", body.dump());
  }
  // The gRPC Classify answer for the same prompt.
  static v1::ClassifyResponse Grpc(const std::vector<uint32_t>& prompt) {
    auto stub = v1::Inference::NewStub(testing::Connect(server_->grpc_address()));
    v1::ClassifyRequest req;
    req.set_adapter_id("cls");
    for (uint32_t t : prompt) req.add_prompt_token_ids(t);
    grpc::ClientContext ctx;
    v1::ClassifyResponse resp;
    grpc::Status st = stub->Classify(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }
  // Checks one data entry against the gRPC answer for `prompt`.
  static void ExpectSameAsGrpc(const json& d, const std::vector<uint32_t>& prompt) {
    const v1::ClassifyResponse want = Grpc(prompt);
    ASSERT_EQ(want.scores_size(), 3);
    EXPECT_EQ(d["num_classes"], 3);
    EXPECT_EQ(d["labels"].get<std::vector<std::string>>(), kLabels);
    ASSERT_EQ(d["logits"].size(), 3u);
    ASSERT_EQ(d["probs"].size(), 3u);
    int top = 0;
    double sum = 0;
    for (int l = 0; l < 3; ++l) {
      // Rows that share a step may differ from a row alone in the last bits
      // (another GEMM shape), hence a tolerance rather than equality.
      const double logit = want.scores(l).logit();
      EXPECT_NEAR(d["logits"][l].get<double>(), logit, 1e-5 * std::max(1.0, std::abs(logit))) << "label " << l;
      EXPECT_NEAR(d["probs"][l].get<double>(), want.scores(l).probability(), 1e-5) << "label " << l;
      sum += d["probs"][l].get<double>();
      if (want.scores(l).logit() > want.scores(top).logit()) top = l;
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
    EXPECT_EQ(d["label"], kLabels[top]);
  }

  static ServerProcess* server_;
};

ServerProcess* HttpClassifyTest::server_ = nullptr;

TEST_F(HttpClassifyTest, OneInputGetsTheScoresOfTheGrpcCall) {
  absl::StatusOr<testing::HttpReply> r = Post({{"model", "cls"}, {"input", {5, 17, 99, 3}}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->headers["content-type"], "application/json");
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["model"], "cls");
  EXPECT_EQ(j["id"], "classify-" + r->headers["x-request-id"]);
  EXPECT_GT(j["created"].get<int64_t>(), 0);
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["index"], 0);
  ExpectSameAsGrpc(j["data"][0], {5, 17, 99, 3});
  EXPECT_EQ(j["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(j["usage"]["total_tokens"], 4);
  EXPECT_EQ(j["usage"]["completion_tokens"], 0);
}

TEST_F(HttpClassifyTest, SeveralInputsAreRowsInInputOrder) {
  const std::vector<std::vector<uint32_t>> inputs = {{5, 17, 99, 3}, {42}, {7, 8, 9, 10, 11, 12}};
  absl::StatusOr<testing::HttpReply> r = Post({{"model", "cls"}, {"input", inputs}});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  ASSERT_EQ(j["data"].size(), inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(j["data"][i]["index"], i);
    ExpectSameAsGrpc(j["data"][i], inputs[i]);
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], 11);
  // Different prompts, different scores: the rows were not mixed up.
  EXPECT_NE(j["data"][0]["logits"], j["data"][1]["logits"]);
}

TEST_F(HttpClassifyTest, WrongModelsAndBadInputsGetOpenAiErrors) {
  struct Case {
    json body;
    int status;
    std::string param;    // "" for none
    std::string message;  // a part of the message
  };
  const std::vector<Case> cases = {
      {{{"model", kBase}, {"input", {1, 2}}}, 400, "", "base model"},
      {{{"input", {1, 2}}}, 400, "", "base model"},
      {{{"model", "demo-qv-r4"}, {"input", {1, 2}}}, 400, "", "'demo-qv-r4' is a causal-LM adapter"},
      {{{"model", "nope"}, {"input", {1, 2}}}, 404, "model", "The model 'nope' does not exist"},
      {{{"model", "cls"}}, 400, "input", "input is required"},
      {{{"model", "cls"}, {"input", json::array()}}, 400, "input", "input must be a string"},
      {{{"model", "cls"}, {"input", {{1, 2}, "a"}}}, 400, "input[1]", "input must be"},
      {{{"model", "cls"}, {"input", {1, -2}}}, 400, "input", "token ids"},
      {{{"model", "cls"}, {"input", {1, 999999}}}, 400, "input", "outside the vocabulary"},
      {{{"model", "cls"}, {"input", {{1}, {2, 999999}}}}, 400, "input[1]", "outside the vocabulary"},
      {{{"model", "cls"}, {"input", "text"}}, 400, "", "tokenizer"},  // the demo checkpoint has none
      {{{"model", "cls"}, {"input", {1}}, {"add_special_tokens", "yes"}}, 400, "add_special_tokens", "boolean"},
      {{{"model", "cls"}, {"input", {1}}, {"truncate_prompt_tokens", 4}}, 400, "truncate_prompt_tokens",
       "not supported"},
      {{{"model", 7}, {"input", {1}}}, 400, "model", "string"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body.dump());
    absl::StatusOr<testing::HttpReply> r = Post(c.body);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status, c.status) << r->body;
    const json e = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << r->body;
    EXPECT_THAT(e["error"]["message"].get<std::string>(), HasSubstr(c.message));
    EXPECT_EQ(e["error"]["code"], c.status);
    EXPECT_EQ(e["error"]["type"], c.status == 404 ? "not_found_error" : "invalid_request_error");
    EXPECT_EQ(e["error"]["param"], c.param.empty() ? json(nullptr) : json(c.param)) << r->body;
  }
  // Too many inputs for one request.
  absl::StatusOr<testing::HttpReply> many =
      Post({{"model", "cls"}, {"input", std::vector<std::vector<int>>(65, std::vector<int>{1})}});
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(many->status, 400) << many->body;
  absl::StatusOr<testing::HttpReply> method = HttpCall(server_->http_address(), "GET", "/v1/classify");
  ASSERT_TRUE(method.ok());
  EXPECT_EQ(method->status, 405);
  // A completion through the classifier is refused, saying why.
  absl::StatusOr<testing::HttpReply> gen = HttpCall(server_->http_address(), "POST", "/v1/completions",
                                                    json({{"model", "cls"}, {"prompt", {1, 2}}}).dump());
  ASSERT_TRUE(gen.ok());
  EXPECT_EQ(gen->status, 400) << gen->body;
  EXPECT_THAT(gen->body, HasSubstr("sequence-classification adapter"));
  // And the server still classifies.
  absl::StatusOr<testing::HttpReply> ok = Post({{"model", "cls"}, {"input", {1, 2}}});
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->status, 200) << ok->body;
}

TEST_F(HttpClassifyTest, AdapterctlClassifiesAndDescribesTheClassifier) {
  const std::string ctl = testing::BinaryDir() + "/server/adapterctl --addr=" + server_->grpc_address();
  absl::StatusOr<std::string> out = testing::RunCommand(ctl + " classify --adapter=cls --prompt=5,17,99,3");
  ASSERT_TRUE(out.ok()) << out.status();
  const v1::ClassifyResponse want = Grpc({5, 17, 99, 3});
  for (const v1::LabelScore& s : want.scores()) {
    EXPECT_THAT(*out, HasSubstr(absl::StrCat(s.label(), "\t", s.probability()))) << *out;
  }
  EXPECT_THAT(*out, HasSubstr("prompt_tokens=4 pooled_index=3"));
  absl::StatusOr<std::string> wrong = testing::RunCommand(ctl + " classify --adapter=demo-qv-r4 --prompt=1,2");
  ASSERT_FALSE(wrong.ok());
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("causal-LM adapter"));
  absl::StatusOr<std::string> get = testing::RunCommand(ctl + " get --id=cls");
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_THAT(*get, HasSubstr("task=SEQ_CLS  labels=neg,neu,pos  modules_to_save=score"));
}

}  // namespace
}  // namespace adapterd
