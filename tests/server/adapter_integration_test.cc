// Adapters through the real server: Admin load/upload/unload over gRPC,
// per-request routing, bad adapters, and load/unload while others generate.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/clients.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class AdapterServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir("adapters"));
    auto model_dir = model::EnsureDemoCheckpoint(*dir_ + "/cache");
    ASSERT_TRUE(model_dir.ok());
    config_ = new model::ModelConfig(*model::ModelConfig::FromDirectory(*model_dir));
    auto s = testing::ServerProcess::Start({"--model=" + *model_dir, "--max_upload_mb=1"});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = s->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete config_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    channel_ = adapterd::testing::Connect(server_->grpc_address());
    admin_ = v1::Admin::NewStub(channel_);
    inference_ = v1::Inference::NewStub(channel_);
  }

  // Writes an adapter under the suite's directory and returns its path.
  static std::string Adapter(const std::string& name, testing::LoraSpec spec = {}) {
    const std::string d = *dir_ + "/" + name;
    const absl::Status s = testing::MakeLora(*config_, spec).WriteTo(d);
    EXPECT_TRUE(s.ok()) << s;
    return d;
  }
  grpc::Status Load(const std::string& id, const std::string& path, bool replace = false,
                    v1::AdapterInfo* info = nullptr) {
    grpc::ClientContext ctx;
    v1::LoadAdapterRequest req;
    req.set_adapter_id(id);
    req.set_path(path);
    req.set_replace(replace);
    v1::AdapterInfo unused;
    return admin_->LoadAdapter(&ctx, req, info ? info : &unused);
  }
  grpc::Status Unload(const std::string& id) {
    grpc::ClientContext ctx;
    v1::UnloadAdapterRequest req;
    req.set_adapter_id(id);
    v1::UnloadAdapterResponse resp;
    return admin_->UnloadAdapter(&ctx, req, &resp);
  }
  std::vector<std::string> ListIds() {
    grpc::ClientContext ctx;
    v1::ListAdaptersResponse resp;
    EXPECT_TRUE(admin_->ListAdapters(&ctx, {}, &resp).ok());
    std::vector<std::string> ids;
    for (const auto& a : resp.adapters()) ids.push_back(a.adapter_id());
    return ids;
  }
  grpc::Status Generate(const std::string& adapter, std::vector<uint32_t>* tokens, int n = 8) {
    v1::GenerateRequest req;
    req.set_adapter_id(adapter);
    for (uint32_t t : {11u, 22u, 33u, 44u}) req.add_prompt_token_ids(t);
    req.mutable_sampling()->set_max_new_tokens(n);
    req.mutable_sampling()->set_ignore_eos(true);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    v1::GenerateResponse resp;
    grpc::Status st = inference_->Generate(&ctx, req, &resp);
    if (tokens) tokens->assign(resp.token_ids().begin(), resp.token_ids().end());
    return st;
  }
  std::string Metrics() { return *testing::HttpGet(server_->metrics_address(), "/metrics"); }

  static std::string* dir_;
  static model::ModelConfig* config_;
  static testing::ServerProcess* server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<v1::Inference::Stub> inference_;
};

std::string* AdapterServerTest::dir_ = nullptr;
model::ModelConfig* AdapterServerTest::config_ = nullptr;
testing::ServerProcess* AdapterServerTest::server_ = nullptr;

TEST_F(AdapterServerTest, LoadRouteInspectUnload) {
  std::vector<uint32_t> base, with;
  ASSERT_TRUE(Generate("", &base).ok());
  v1::AdapterInfo info;
  ASSERT_TRUE(Load("route-a", Adapter("route-a", {.r = 4, .alpha = 8, .seed = 5}), false, &info).ok());
  EXPECT_EQ(info.state(), v1::ADAPTER_STATE_READY);
  EXPECT_EQ(info.type(), "lora");
  EXPECT_THAT(info.ranks(), ::testing::ElementsAre(4u));
  EXPECT_THAT(info.target_modules(), ::testing::ElementsAre("q_proj", "v_proj"));
  EXPECT_GT(info.bytes(), 0u);
  ASSERT_TRUE(Generate("route-a", &with).ok());
  EXPECT_NE(base, with) << "the adapter changed nothing";
  std::vector<uint32_t> again;
  ASSERT_TRUE(Generate("route-a", &again).ok());
  EXPECT_EQ(with, again);

  grpc::ClientContext ctx;
  v1::GetAdapterRequest get;
  get.set_adapter_id("route-a");
  v1::AdapterInfo got;
  ASSERT_TRUE(admin_->GetAdapter(&ctx, get, &got).ok());
  EXPECT_EQ(got.requests_served(), 2u);
  EXPECT_EQ(got.tokens_generated(), 16u);
  EXPECT_THAT(Metrics(), HasSubstr("adapterd_adapter_requests_total{adapter=\"route-a\"} 2"));
  EXPECT_THAT(Metrics(), HasSubstr("adapterd_adapters_loaded 1"));

  ASSERT_TRUE(Unload("route-a").ok());
  grpc::Status st = Generate("route-a", nullptr);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(st.error_message(), HasSubstr("route-a"));
  EXPECT_EQ(Unload("route-a").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(Metrics(), HasSubstr("adapterd_adapters_loaded 0"));
  EXPECT_THAT(Metrics(), HasSubstr("adapterd_adapter_bytes 0"));
}

TEST_F(AdapterServerTest, DuplicateIdNeedsReplaceWhichSwaps) {
  ASSERT_TRUE(Load("dup", Adapter("dup-1", {.seed = 21})).ok());
  std::vector<uint32_t> first, second;
  ASSERT_TRUE(Generate("dup", &first).ok());
  grpc::Status st = Load("dup", Adapter("dup-2", {.seed = 22}));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_TRUE(Load("dup", *dir_ + "/dup-2", /*replace=*/true).ok());
  ASSERT_TRUE(Generate("dup", &second).ok());
  EXPECT_NE(first, second);
  ASSERT_TRUE(Unload("dup").ok());
}

TEST_F(AdapterServerTest, BadAdaptersAreRejectedAndLeaveNoTrace) {
  const std::vector<std::string> before = ListIds();
  struct Case {
    std::string name;
    std::string id;
    std::function<std::string()> make;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases = {
      {"bad id", "bad id!", [] { return Adapter("ok-for-bad-id"); },
       grpc::StatusCode::INVALID_ARGUMENT, "adapter_id"},
      {"wrong shapes", "wrong-shape",
       [] {
         model::ModelConfig other = *config_;
         other.hidden_size = 128;
         other.intermediate_size = 344;
         const std::string d = *dir_ + "/wrong-shape";
         const absl::Status s = testing::MakeLora(other, {}).WriteTo(d);
         EXPECT_TRUE(s.ok()) << s;
         return d;
       },
       grpc::StatusCode::FAILED_PRECONDITION, "expected [4, 256]"},
      {"missing tensor", "missing",
       [] {
         const std::string d = Adapter("missing");
         auto f = model::SafetensorsFile::Open(d + "/adapter_model.safetensors");
         std::vector<model::StTensorToWrite> keep;
         for (const auto& t : (*f)->tensors()) {
           if (t.name == "base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight") continue;
           auto data = (*f)->Data(t);
           keep.push_back({t.name, t.dtype, t.shape,
                           std::string_view(reinterpret_cast<const char*>(data.data()), data.size())});
         }
         EXPECT_TRUE(model::WriteSafetensors(d + "/adapter_model.safetensors", keep).ok());
         return d;
       },
       grpc::StatusCode::INVALID_ARGUMENT, "layers.2.self_attn.v_proj.lora_B.weight"},
      {"unknown target", "unknown",
       [] {
         const std::string d = Adapter("unknown");
         std::vector<model::StTensorToWrite> t;
         const float zeros[8] = {};
         t.push_back({"base_model.model.model.layers.0.self_attn.rotary_proj.lora_A.weight",
                      model::StDType::kF32, {2, 4}, std::string_view(reinterpret_cast<const char*>(zeros), 32)});
         EXPECT_TRUE(model::WriteSafetensors(d + "/adapter_model.safetensors", t).ok());
         return d;
       },
       grpc::StatusCode::FAILED_PRECONDITION, "rotary_proj"},
      {"truncated file", "truncated",
       [] {
         const std::string d = Adapter("truncated");
         fs::resize_file(d + "/adapter_model.safetensors",
                         fs::file_size(d + "/adapter_model.safetensors") / 2);
         return d;
       },
       grpc::StatusCode::INVALID_ARGUMENT, "adapter_model.safetensors"},
      {"pickle", "pickle",
       [] {
         const std::string d = *dir_ + "/pickle";
         fs::create_directories(d);
         std::ofstream(d + "/adapter_config.json") << R"({"peft_type": "LORA", "r": 4})";
         std::ofstream(d + "/adapter_model.bin") << "\x80\x02}q\x00.";
         return d;
       },
       grpc::StatusCode::INVALID_ARGUMENT, "pickled"},
      {"unknown bias", "bias",
       [] {
         const std::string d = Adapter("bias");
         std::ofstream(d + "/adapter_config.json")
             << R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "bias": "most"})";
         return d;
       },
       grpc::StatusCode::INVALID_ARGUMENT, "'bias'"},
      {"modules_to_save without its tensor", "mts",
       [] {
         const std::string d = Adapter("mts");
         std::ofstream(d + "/adapter_config.json")
             << R"({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]})";
         return d;
       },
       grpc::StatusCode::INVALID_ARGUMENT, "missing tensor 'base_model.model.lm_head.weight'"},
      {"modules_to_save naming a module the base lacks", "mts-unknown",
       [] {
         const std::string d = Adapter("mts-unknown");
         std::ofstream(d + "/adapter_config.json")
             << R"({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["value_head"]})";
         return d;
       },
       grpc::StatusCode::FAILED_PRECONDITION, "'value_head', a module the base model"},
      {"missing directory", "nodir", [] { return *dir_ + "/does-not-exist"; },
       grpc::StatusCode::NOT_FOUND, "does-not-exist"},
  };
  for (const Case& c : cases) {
    grpc::Status st = Load(c.id, c.make());
    EXPECT_EQ(st.error_code(), c.code) << c.name << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(c.message)) << c.name;
    EXPECT_EQ(ListIds(), before) << c.name;
    if (c.id != "bad id!") {
      EXPECT_EQ(Generate(c.id, nullptr).error_code(), grpc::StatusCode::NOT_FOUND) << c.name;
    }
  }
  EXPECT_THAT(Metrics(), HasSubstr("adapterd_adapter_load_failures_total{reason=\"FAILED_PRECONDITION\"}"));
}

TEST_F(AdapterServerTest, UploadIsLikeLoadAndCapped) {
  const std::string d = Adapter("up", {.seed = 31});
  ASSERT_TRUE(Load("up-path", d).ok());
  v1::AdapterInfo info;
  {
    grpc::ClientContext ctx;
    auto w = admin_->UploadAdapter(&ctx, &info);
    v1::UploadAdapterRequest msg;
    msg.mutable_header()->set_adapter_id("up-upload");
    ASSERT_TRUE(w->Write(msg));
    for (const char* name : {"adapter_config.json", "adapter_model.safetensors"}) {
      std::ifstream in(d + "/" + name, std::ios::binary);
      std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      msg.Clear();
      msg.mutable_chunk()->set_file_name(name);
      msg.mutable_chunk()->set_data(data);
      ASSERT_TRUE(w->Write(msg));
    }
    w->WritesDone();
    grpc::Status st = w->Finish();
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_EQ(info.source(), "upload");
  std::vector<uint32_t> a, b;
  ASSERT_TRUE(Generate("up-path", &a).ok());
  ASSERT_TRUE(Generate("up-upload", &b).ok());
  EXPECT_EQ(a, b);

  // Over --max_upload_mb=1: a rank-256 adapter on every projection.
  const std::string big = Adapter("big", {.r = 256, .alpha = 16,
                                          .targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}});
  grpc::ClientContext ctx;
  v1::AdapterInfo unused;
  auto w = admin_->UploadAdapter(&ctx, &unused);
  v1::UploadAdapterRequest msg;
  msg.mutable_header()->set_adapter_id("too-big");
  w->Write(msg);
  std::ifstream in(big + "/adapter_model.safetensors", std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t off = 0; off < data.size(); off += 512 << 10) {
    msg.Clear();
    msg.mutable_chunk()->set_file_name("adapter_model.safetensors");
    msg.mutable_chunk()->set_data(data.substr(off, 512 << 10));
    if (!w->Write(msg)) break;
  }
  w->WritesDone();
  grpc::Status st = w->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("limit"));
  ASSERT_TRUE(Unload("up-path").ok());
  ASSERT_TRUE(Unload("up-upload").ok());
}

TEST_F(AdapterServerTest, UnloadLetsInFlightRequestsFinish) {
  ASSERT_TRUE(Load("inflight", Adapter("inflight", {.seed = 41})).ok());
  v1::GenerateRequest req;
  req.set_adapter_id("inflight");
  for (uint32_t t : {1u, 2u, 3u}) req.add_prompt_token_ids(t);
  req.mutable_sampling()->set_max_new_tokens(300);
  req.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  auto reader = inference_->GenerateStream(&ctx, req);
  v1::GenerateStreamResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  size_t tokens = msg.token_ids_size();
  ASSERT_TRUE(Unload("inflight").ok());
  EXPECT_EQ(Generate("inflight", nullptr).error_code(), grpc::StatusCode::NOT_FOUND);
  while (reader->Read(&msg)) tokens += msg.token_ids_size();
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 300u);
  // The weights go once the last request lets go.
  bool freed = false;
  for (int i = 0; i < 100 && !freed; ++i) {
    {
      grpc::ClientContext c;
      v1::ListAdaptersResponse r;
      admin_->ListAdapters(&c, {}, &r);  // refreshes the bytes gauge
    }
    freed = absl::StrContains(Metrics(), "adapterd_adapter_bytes 0\n");
    if (!freed) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(freed) << Metrics();
}

TEST_F(AdapterServerTest, LoadUnloadLoopWhileOthersGenerate) {
  ASSERT_TRUE(Load("stable-a", Adapter("stable-a", {.seed = 51})).ok());
  ASSERT_TRUE(Load("stable-b", Adapter("stable-b", {.r = 8, .alpha = 16, .targets = {"o_proj", "down_proj"}, .seed = 52})).ok());
  const std::string churn_dir = Adapter("churn", {.seed = 53});
  std::vector<uint32_t> want_a, want_b, want_base;
  ASSERT_TRUE(Generate("stable-a", &want_a).ok());
  ASSERT_TRUE(Generate("stable-b", &want_b).ok());
  ASSERT_TRUE(Generate("", &want_base).ok());

  std::atomic<bool> stop{false};
  std::atomic<int> unexpected{0}, generated{0};
  std::vector<std::thread> clients;
  for (auto [id, want] : {std::pair{std::string("stable-a"), &want_a},
                          std::pair{std::string("stable-b"), &want_b},
                          std::pair{std::string(""), &want_base}}) {
    clients.emplace_back([&, id, want] {
      for (int i = 0; i < 200 && !stop; ++i) {
        std::vector<uint32_t> got;
        grpc::Status st = Generate(id, &got);
        if (!st.ok() || got != *want) ++unexpected;
        ++generated;
      }
    });
  }
  clients.emplace_back([&] {  // races the churn: may see NOT_FOUND/UNAVAILABLE, nothing else
    for (int i = 0; i < 200 && !stop; ++i) {
      grpc::Status st = Generate("churn", nullptr, 2);
      if (!st.ok() && st.error_code() != grpc::StatusCode::NOT_FOUND &&
          st.error_code() != grpc::StatusCode::UNAVAILABLE) {
        ++unexpected;
      }
    }
  });
  for (int i = 0; i < 15; ++i) {
    grpc::Status st = Load("churn", churn_dir);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_TRUE(Generate("churn", nullptr, 2).ok());
    ASSERT_TRUE(Unload("churn").ok());
  }
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_GT(generated.load(), 3);
  ASSERT_TRUE(Unload("stable-a").ok());
  ASSERT_TRUE(Unload("stable-b").ok());
}

}  // namespace
}  // namespace adapterd
