// Composed requests through the real server, on the random demo model, over
// gRPC and HTTP: a composition of one adapter (or of its weight split in
// two) is that adapter, a composed request is counted under its first
// adapter, and bad compositions (an unknown id, too many adapters, a
// non-finite weight, an adapter that is not plain LoRA, both adapter_id and
// adapters) are refused with INVALID_ARGUMENT or 400, naming the field.
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/demo_checkpoint.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/clients.h"
#include "tests/support/http_client.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::LoraKey;

constexpr int kLayers = 4;
constexpr int kMaxAdapters = 3;
constexpr char kBase[] = "demo-llama-v1";

class ComposeServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = testing::MakeTempDir("compose");
    auto model_dir = model::EnsureDemoCheckpoint(dir + "/cache");
    ASSERT_TRUE(model_dir.ok()) << model_dir.status();
    auto s = testing::ServerProcess::Start(
        {"--model=" + *model_dir, absl::StrCat("--max_adapters_per_request=", kMaxAdapters),
         absl::StrCat("--served_model_name=", kBase)});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = s->release();
    testing::FakeAdapter dora = testing::QvLora(3);
    dora.config["use_dora"] = true;
    testing::FakeAdapter ia3;
    ia3.config = {{"peft_type", "IA3"},
                  {"task_type", "CAUSAL_LM"},
                  {"target_modules", {"k_proj", "v_proj", "down_proj"}},
                  {"feedforward_modules", {"down_proj"}}};
    for (int l = 0; l < kLayers; ++l) {
      dora.Add(LoraKey(l, "self_attn.q_proj", "lora_magnitude_vector"), {256}, 70 + l, 1.0f);
      dora.Add(LoraKey(l, "self_attn.v_proj", "lora_magnitude_vector"), {128}, 80 + l, 1.0f);
      ia3.Add(LoraKey(l, "self_attn.k_proj", "ia3_l"), {128, 1}, 10 + l, 1.0f);
      ia3.Add(LoraKey(l, "self_attn.v_proj", "ia3_l"), {128, 1}, 20 + l, 1.0f);
      ia3.Add(LoraKey(l, "mlp.down_proj", "ia3_l"), {1, 688}, 30 + l, 1.0f);
    }
    testing::LoraSpec all{.r = 8, .alpha = 16,
                          .targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
                          .seed = 50, .b_amplitude = 0.1f};
    auto admin = v1::Admin::NewStub(testing::Connect(server_->grpc_address()));
    for (const auto& [id, adapter] : {std::pair<std::string, testing::FakeAdapter>{"qv", testing::QvLora(1)},
                                      {"all", testing::DemoLora(all)}, {"dora", dora}, {"ia3", ia3}}) {
      grpc::Status st = testing::UploadFiles(*admin, id, adapter.Files());
      ASSERT_TRUE(st.ok()) << id << ": " << st.error_message();
    }
  }
  static void TearDownTestSuite() { delete server_; }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    inference_ = v1::Inference::NewStub(testing::Connect(server_->grpc_address()));
  }

  // A greedy request for 8 tokens with logprobs, composed of `parts`.
  static v1::GenerateRequest Composed(const std::vector<std::pair<std::string, float>>& parts) {
    v1::GenerateRequest req = testing::GreedyRequest("", {11, 22, 33, 44, 55}, 8);
    req.mutable_sampling()->set_return_logprobs(true);
    for (const auto& [id, w] : parts) {
      v1::AdapterWeight* a = req.add_adapters();
      a->set_adapter_id(id);
      a->set_weight(w);
    }
    return req;
  }
  grpc::Status Generate(const v1::GenerateRequest& req, v1::GenerateResponse* resp) {
    grpc::ClientContext ctx;
    return inference_->Generate(&ctx, req, resp);
  }
  // A completion over HTTP; `extra` is merged into the body.
  absl::StatusOr<testing::HttpReply> Complete(const json& extra) {
    json body = {{"prompt", {11, 22, 33, 44, 55}}, {"max_tokens", 8}, {"temperature", 0},
                 {"ignore_eos", true}, {"return_token_ids", true}};
    body.update(extra);
    return testing::HttpCall(server_->http_address(), "POST", "/v1/completions", body.dump(),
                             {{"Content-Type", "application/json"}});
  }
  // adapterd_adapter_requests_total{adapter="id"}, 0 when absent.
  double RequestsOf(const std::string& id) {
    std::istringstream in(*testing::HttpGet(server_->metrics_address(), "/metrics"));
    const std::string prefix = absl::StrCat("adapterd_adapter_requests_total{adapter=\"", id, "\"} ");
    double v = 0;
    for (std::string line; std::getline(in, line);) {
      if (absl::StartsWith(line, prefix)) EXPECT_TRUE(absl::SimpleAtod(line.substr(prefix.size()), &v));
    }
    return v;
  }

  static testing::ServerProcess* server_;
  std::unique_ptr<v1::Inference::Stub> inference_;
};

testing::ServerProcess* ComposeServerTest::server_ = nullptr;

void ExpectSameOutput(const v1::GenerateResponse& got, const v1::GenerateResponse& want) {
  EXPECT_EQ(std::vector<uint32_t>(got.token_ids().begin(), got.token_ids().end()),
            std::vector<uint32_t>(want.token_ids().begin(), want.token_ids().end()));
  ASSERT_EQ(got.logprobs_size(), want.logprobs_size());
  for (int i = 0; i < got.logprobs_size(); ++i) EXPECT_NEAR(got.logprobs(i), want.logprobs(i), 1e-4) << "token " << i;
}

TEST_F(ComposeServerTest, CompositionsAddWeightedDeltas) {
  v1::GenerateResponse base, qv, all, one, split, both, zero;
  ASSERT_TRUE(Generate(Composed({}), &base).ok());
  v1::GenerateRequest single = Composed({});
  single.set_adapter_id("qv");
  ASSERT_TRUE(Generate(single, &qv).ok());
  single.set_adapter_id("all");
  ASSERT_TRUE(Generate(single, &all).ok());
  // One adapter at weight 1 is that adapter; so is its weight split over
  // the id given twice; a weight of 0 adds nothing.
  ASSERT_TRUE(Generate(Composed({{"qv", 1.0f}}), &one).ok());
  ExpectSameOutput(one, qv);
  ASSERT_TRUE(Generate(Composed({{"qv", 0.25f}, {"qv", 0.75f}}), &split).ok());
  ExpectSameOutput(split, qv);
  ASSERT_TRUE(Generate(Composed({{"all", 1.0f}, {"qv", 0.0f}}), &zero).ok());
  ExpectSameOutput(zero, all);
  // Both at once is neither alone nor the base.
  ASSERT_TRUE(Generate(Composed({{"qv", 1.0f}, {"all", 1.0f}}), &both).ok());
  EXPECT_NE(both.logprobs(0), qv.logprobs(0));
  EXPECT_NE(both.logprobs(0), all.logprobs(0));
  EXPECT_NE(both.logprobs(0), base.logprobs(0));
  // An unset weight is 1.
  v1::GenerateRequest unset = Composed({});
  unset.add_adapters()->set_adapter_id("qv");
  v1::GenerateResponse unset_resp;
  ASSERT_TRUE(Generate(unset, &unset_resp).ok());
  ExpectSameOutput(unset_resp, qv);

  // HTTP: the same composition, with model naming the base or omitted.
  for (const json& model : {json(kBase), json()}) {
    json extra = {{"logprobs", 0}, {"adapters", {{{"id", "qv"}, {"weight", 1.0}}, {{"id", "all"}, {"weight", 1.0}}}}};
    if (!model.is_null()) extra["model"] = model;
    auto reply = Complete(extra);
    ASSERT_TRUE(reply.ok()) << reply.status();
    ASSERT_EQ(reply->status, 200) << reply->body;
    const json choice = json::parse(reply->body)["choices"][0];
    EXPECT_EQ(choice["token_ids"], json(std::vector<uint32_t>(both.token_ids().begin(), both.token_ids().end())));
    EXPECT_NEAR(choice["logprobs"]["token_logprobs"][0].get<double>(), both.logprobs(0), 1e-4);
  }
}

TEST_F(ComposeServerTest, ComposedRequestsCountUnderTheirFirstAdapter) {
  const double qv = RequestsOf("qv"), all = RequestsOf("all");
  v1::GenerateResponse resp;
  ASSERT_TRUE(Generate(Composed({{"all", 0.5f}, {"qv", 0.5f}}), &resp).ok());
  EXPECT_EQ(RequestsOf("all"), all + 1);
  EXPECT_EQ(RequestsOf("qv"), qv);
}

struct BadCase {
  std::string what;
  std::vector<std::pair<std::string, float>> parts;
  std::vector<std::string> message;  // substrings of the error
};

std::vector<BadCase> BadCases() {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  return {
      {"unknown id", {{"qv", 1}, {"nope", 1}}, {"adapters[1]", "'nope'", "not loaded"}},
      {"too many", {{"qv", 1}, {"all", 1}, {"qv", 1}, {"all", 1}}, {"adapters", "4", "--max_adapters_per_request", "3"}},
      {"NaN weight", {{"qv", nan}}, {"adapters[0].weight", "'qv'", "finite"}},
      {"infinite weight", {{"qv", 1}, {"all", -inf}}, {"adapters[1].weight", "'all'", "finite"}},
      {"IA3", {{"qv", 1}, {"ia3", 1}}, {"adapters[1]", "'ia3'", "ia3", "plain LoRA"}},
      {"DoRA", {{"dora", 1}, {"qv", 1}}, {"adapters[0]", "'dora'", "DoRA", "plain LoRA"}},
      {"empty id", {{"", 1}}, {"adapters[0]", "empty"}},
  };
}

TEST_F(ComposeServerTest, BadCompositionsAreInvalidArgumentOverGrpc) {
  for (const BadCase& c : BadCases()) {
    SCOPED_TRACE(c.what);
    v1::GenerateResponse resp;
    grpc::Status st = Generate(Composed(c.parts), &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    for (const std::string& m : c.message) EXPECT_THAT(st.error_message(), HasSubstr(m));
  }
  v1::GenerateRequest both = Composed({{"qv", 1}});
  both.set_adapter_id("all");
  v1::GenerateResponse resp;
  grpc::Status st = Generate(both, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), AllOf(HasSubstr("adapter_id"), HasSubstr("adapters"), HasSubstr("mutually exclusive")));
}

TEST_F(ComposeServerTest, BadCompositionsAre400OverHttp) {
  for (const BadCase& c : BadCases()) {
    SCOPED_TRACE(c.what);
    if (c.what == "NaN weight") continue;  // not expressible in JSON; the infinite one covers the check
    json adapters = json::array();
    for (const auto& [id, w] : c.parts) {
      // JSON has no NaN or infinity; a weight beyond float32's range is infinite in the kernels.
      adapters.push_back({{"id", id}, {"weight", std::isfinite(w) ? json(w) : json(std::copysign(1e300, w))}});
    }
    const std::string body = json{{"prompt", {11, 22, 33}}, {"max_tokens", 4}, {"adapters", adapters}}.dump();
    auto reply = testing::HttpCall(server_->http_address(), "POST", "/v1/completions", body,
                                   {{"Content-Type", "application/json"}});
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->status, 400) << reply->body;
    const json error = json::parse(reply->body)["error"];
    EXPECT_EQ(error["param"], "adapters") << reply->body;
    EXPECT_EQ(error["type"], "invalid_request_error");
    EXPECT_EQ(error["code"], 400);
    for (const std::string& m : c.message) EXPECT_THAT(error["message"].get<std::string>(), HasSubstr(m));
  }
  // model naming an adapter, and malformed lists, on both endpoints.
  const json chat = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  const json prompt = {{"prompt", {11, 22, 33}}};
  for (const auto& [path, base] : {std::pair{"/v1/completions", prompt}, std::pair{"/v1/chat/completions", chat}}) {
    for (const auto& [extra, message] :
         std::vector<std::pair<json, std::string>>{{{{"model", "qv"}, {"adapters", {{{"id", "all"}}}}}, "model must"},
                                                   {{{"adapters", json::array()}}, "non-empty list"},
                                                   {{{"adapters", {{{"weight", 1}}}}}, "adapters[0].id"},
                                                   {{{"adapters", {{{"id", "qv"}, {"weight", "1"}}}}}, "adapters[0].weight"}}) {
      json body = base;
      body.update(extra);
      auto reply = testing::HttpCall(server_->http_address(), "POST", path, body.dump(),
                                     {{"Content-Type", "application/json"}});
      ASSERT_TRUE(reply.ok()) << reply.status();
      EXPECT_EQ(reply->status, 400) << path << " " << body.dump() << ": " << reply->body;
      const json error = json::parse(reply->body)["error"];
      EXPECT_EQ(error["param"], "adapters") << reply->body;
      EXPECT_THAT(error["message"].get<std::string>(), HasSubstr(message)) << reply->body;
    }
  }
}

}  // namespace
}  // namespace adapterd
