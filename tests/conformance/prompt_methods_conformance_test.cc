// Conformance of prefix tuning and LLaMA-Adapter, computed live: PEFT creates
// PREFIX_TUNING adapters (with and without prefix_projection) on tiny Llama
// and Qwen2 checkpoints, and ADAPTION_PROMPT adapters (adapter_layers 1 and
// all) on the Llama one, every trained tensor random and every gate away
// from zero. PEFT supports ADAPTION_PROMPT only for llama, mistral and gpt2
// model types, so the Qwen2 checkpoint gets prefix tuning alone; the Llama
// checkpoint has grouped-query attention (4 heads, 2 key/value heads), which
// PEFT's LLaMA-Adapter handles by repeating the key/value heads.
//
// adapterd loads the files by path and by upload (with the prefix cache on,
// each request twice, so the second one reads cached blocks) and must give
// PEFT's 32 greedy tokens with step log-probabilities within 1e-4. One
// engine batch mixing the base, both prompt methods, LoRA and prompt tuning
// must give every row its single-row result.
#include <ATen/ATen.h>
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "adapters/adapter_registry.h"
#include "gtest/gtest.h"
#include "server/engine/engine.h"
#include "server/model/composed_lease.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"
#include "tests/support/clients.h"
#include "tests/support/reference_outputs.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd {
namespace {

constexpr double kTol = 1e-4;
constexpr int kNewTokens = 32;

struct Kind {
  std::string name;
  std::string script;  // prompt_methods_reference.py or peft_reference.py
  std::string args;
  std::string type;    // AdapterInfo.type
  int64_t virtual_tokens = 0;
};

std::vector<Kind> Kinds(const std::string& arch) {
  std::vector<Kind> k = {
      {"prefix", "prompt_methods_reference.py", "make-prefix --virtual-tokens 5", "prefix_tuning", 5},
      {"prefix_proj", "prompt_methods_reference.py",
       arch == "llama" ? "make-prefix --virtual-tokens 20 --projection" : "make-prefix --virtual-tokens 16 --projection",
       "prefix_tuning", arch == "llama" ? 20 : 16},
  };
  if (arch == "llama") {
    k.push_back({"adaption_1", "prompt_methods_reference.py", "make-adaption --adapter-len 6 --adapter-layers 1",
                 "adaption_prompt"});
    k.push_back({"adaption_all", "prompt_methods_reference.py", "make-adaption --adapter-len 4 --adapter-layers 2",
                 "adaption_prompt"});
    k.push_back({"lora", "peft_reference.py", "make-lora --r 8 --alpha 16 --targets all-linear", "lora"});
    k.push_back({"lora_r4", "peft_reference.py", "make-lora --r 4 --alpha 8 --targets q_proj,v_proj,down_proj", "lora"});
    k.push_back({"prompt", "peft_reference.py", "make-prompt-tuning --virtual-tokens 5", "prompt_tuning", 5});
  }
  return k;
}

std::vector<std::vector<int64_t>> Prompts() {
  return {{5, 17, 99, 3}, {42}, {7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 200, 201}};
}

using testing::ToVector;

class PromptMethodsConformanceTest : public ::testing::Test {
 protected:
  // The fixtures are made once per ctest run (a setup test removes them
  // first; see tests/CMakeLists.txt) and reused by this file's other tests,
  // which ctest runs one process each.
  static void SetUpTestSuite() {
    ref_error_ = new std::string();
    const std::string shared = testing::BinaryDir() + "/tests/prompt-methods-fixtures";
    dir_ = new std::string(shared);
    if (std::filesystem::exists(shared + "/complete")) return;
    std::filesystem::remove_all(shared);
    std::filesystem::create_directories(shared);
    auto py = testing::ReferencePython();
    if (!py.ok()) return;
    testing::WritePrompts(*dir_ + "/prompts.json", Prompts());
    int seed = 500;
    for (const std::string arch : {"llama", "qwen2"}) {
      const std::string d = *dir_ + "/" + arch;
      auto made = testing::RunReference(absl::StrCat("make-model --arch ", arch, " --seed 13 --out ", d, "/base"));
      if (!made.ok()) return void(*ref_error_ = made.status().ToString());
      std::vector<std::string> list;
      for (const Kind& k : Kinds(arch)) {
        auto r = testing::RunCommand(absl::StrCat(*py, " ", testing::SourceDir(), "/tests/conformance/", k.script, " ",
                                                  k.args, " --model ", d, "/base --out ", d, "/", k.name,
                                                  " --seed ", seed++));
        if (!r.ok()) return void(*ref_error_ = absl::StrCat(arch, "/", k.name, ": ", r.status().ToString()));
        list.push_back(absl::StrCat(k.name, "=", d, "/", k.name));
      }
      auto r = testing::RunCommand(absl::StrCat(*py, " ", testing::SourceDir(),
                                                "/tests/conformance/peft_reference.py reference --model ", d,
                                                "/base --adapters ", absl::StrJoin(list, ","), " --prompts ", *dir_,
                                                "/prompts.json --out ", d, "/ref.safetensors --new-tokens ",
                                                kNewTokens));
      if (!r.ok()) return void(*ref_error_ = absl::StrCat(arch, " reference: ", r.status().ToString()));
    }
    std::ofstream(shared + "/complete") << "ok\n";
  }

  void SetUp() override {
    ADAPTERD_REQUIRE_REFERENCE();
    ASSERT_TRUE(ref_error_->empty()) << *ref_error_;
  }

  static std::unique_ptr<model::SafetensorsFile> Ref(const std::string& arch) {
    auto f = model::SafetensorsFile::Open(*dir_ + "/" + arch + "/ref.safetensors");
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? *std::move(f) : nullptr;
  }

  static std::string* dir_;
  static std::string* ref_error_;
};

std::string* PromptMethodsConformanceTest::dir_ = nullptr;
std::string* PromptMethodsConformanceTest::ref_error_ = nullptr;

// Over gRPC, with the prefix cache on: every adapter, loaded by path and by
// upload, generates PEFT's greedy tokens with its step log-probabilities,
// the first time and again from cached blocks.
TEST_F(PromptMethodsConformanceTest, ServerMatchesPeft) {
  for (const std::string arch : {"llama", "qwen2"}) {
    SCOPED_TRACE(arch);
    const std::string d = *dir_ + "/" + arch;
    auto ref = Ref(arch);
    ASSERT_NE(ref, nullptr);
    auto server = testing::ServerProcess::Start({"--model=" + d + "/base", "--prefix_caching=true"});
    ASSERT_TRUE(server.ok()) << server.status();
    auto channel = adapterd::testing::Connect((*server)->grpc_address());
    auto admin = v1::Admin::NewStub(channel);
    auto inference = v1::Inference::NewStub(channel);
    const auto prompts = Prompts();
    for (const Kind& k : Kinds(arch)) {
      SCOPED_TRACE(k.name);
      v1::AdapterInfo by_path, by_upload;
      grpc::Status st = testing::LoadAdapterByPath(*admin, k.name, d + "/" + k.name, &by_path);
      ASSERT_TRUE(st.ok()) << st.error_message();
      st = testing::UploadAdapterDir(*admin, k.name + "-up", d + "/" + k.name, &by_upload);
      ASSERT_TRUE(st.ok()) << "upload: " << st.error_message();
      EXPECT_EQ(by_path.type(), k.type);
      EXPECT_EQ(by_upload.type(), k.type);
      EXPECT_EQ(by_path.bytes(), by_upload.bytes());
      EXPECT_EQ(by_path.num_virtual_tokens(), static_cast<uint32_t>(k.virtual_tokens));
      for (const std::string& id : {k.name, k.name + "-up"}) {
        for (size_t i = 0; i < prompts.size(); ++i) {
          for (int pass = 0; pass < 2; ++pass) {
            SCOPED_TRACE(absl::StrCat(id, " prompt ", i, " pass ", pass));
            v1::GenerateRequest req;
            req.set_adapter_id(id);
            for (int64_t t : prompts[i]) req.add_prompt_token_ids(static_cast<uint32_t>(t));
            req.mutable_sampling()->set_max_new_tokens(kNewTokens);
            req.mutable_sampling()->set_ignore_eos(true);
            req.mutable_sampling()->set_return_logprobs(true);
            v1::GenerateResponse resp;
            grpc::ClientContext ctx;
            ASSERT_TRUE(inference->Generate(&ctx, req, &resp).ok());
            const std::string key = absl::StrCat(k.name, ".r", i, ".");
            std::vector<int64_t> want = ToVector(testing::ReadReference(*ref, key + "greedy"));
            EXPECT_EQ(std::vector<int64_t>(resp.token_ids().begin(), resp.token_ids().end()), want);
            at::Tensor steps = testing::ReadReference(*ref, key + "step_logits").log_softmax(-1);
            ASSERT_EQ(resp.logprobs_size(), kNewTokens);
            for (int s = 0; s < kNewTokens; ++s) {
              EXPECT_NEAR(resp.logprobs(s), steps[s][want[s]].item<double>(), kTol) << "step " << s;
            }
            EXPECT_EQ(resp.usage().prompt_tokens(), prompts[i].size());
            EXPECT_EQ(resp.usage().virtual_tokens(), static_cast<uint32_t>(k.virtual_tokens));
          }
        }
      }
      // Each adapter changes the output.
      EXPECT_GT((testing::ReadReference(*ref, k.name + ".r0.last_logits") -
                 testing::ReadReference(*ref, "__base__.r0.last_logits"))
                    .abs().max().item<double>(),
                1e-2);
    }
  }
}

// The prefix cache as an operator sees it: a repeated prompt shows as hit
// tokens in /metrics (adapterd's and vLLM's names), and an adapter that is
// unloaded and loaded again from the same files starts with nothing cached,
// yet gives the same tokens.
TEST_F(PromptMethodsConformanceTest, PrefixCacheHitsShowInMetricsAndAReloadStartsCold) {
  const std::string d = *dir_ + "/llama";
  auto server = testing::ServerProcess::Start({"--model=" + d + "/base", "--prefix_caching=true"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = adapterd::testing::Connect((*server)->grpc_address());
  auto admin = v1::Admin::NewStub(channel);
  auto inference = v1::Inference::NewStub(channel);
  auto hits = [&](const char* name) {
    auto text = testing::HttpGet((*server)->metrics_address(), "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    auto v = testing::MetricSum(text.ok() ? *text : "", name);
    EXPECT_TRUE(v.ok()) << name << ": " << v.status();
    return v.ok() ? *v : -1.0;
  };
  auto generate = [&] {
    v1::GenerateRequest req;
    req.set_adapter_id("a");
    for (int i = 0; i < 40; ++i) req.add_prompt_token_ids(static_cast<uint32_t>(3 + (i * 29) % 250));
    req.mutable_sampling()->set_max_new_tokens(8);
    req.mutable_sampling()->set_ignore_eos(true);
    v1::GenerateResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = inference->Generate(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return std::vector<uint32_t>(resp.token_ids().begin(), resp.token_ids().end());
  };
  v1::AdapterInfo info;
  ASSERT_TRUE(testing::LoadAdapterByPath(*admin, "a", d + "/lora", &info).ok());
  const std::vector<uint32_t> first = generate();
  EXPECT_EQ(hits("adapterd_prefix_cache_hit_tokens_total"), 0);
  EXPECT_GE(hits("adapterd_prefix_cache_queried_tokens_total"), 40);
  EXPECT_EQ(generate(), first);
  EXPECT_EQ(hits("adapterd_prefix_cache_hit_tokens_total"), 32);  // two full blocks of 16
  EXPECT_EQ(hits("vllm:prefix_cache_hits_total"), 32);
  {
    grpc::ClientContext ctx;
    v1::UnloadAdapterRequest req;
    req.set_adapter_id("a");
    v1::UnloadAdapterResponse resp;
    ASSERT_TRUE(admin->UnloadAdapter(&ctx, req, &resp).ok());
  }
  ASSERT_TRUE(testing::LoadAdapterByPath(*admin, "a", d + "/lora", &info).ok());
  EXPECT_EQ(generate(), first);
  EXPECT_EQ(hits("adapterd_prefix_cache_hit_tokens_total"), 32);  // nothing served from the old load
  EXPECT_EQ(generate(), first);
  EXPECT_EQ(hits("adapterd_prefix_cache_hit_tokens_total"), 64);
}

// One engine, every kind at once: the rows' decode steps mix the base,
// prefix tuning (two prefixes), LLaMA-Adapter (two depths), LoRA, prompt
// tuning and a composition of two LoRAs, and each row still gets PEFT's
// single-row tokens and log-probabilities (the composition, whose match
// with PEFT's add_weighted_adapter ComposeConformanceTest checks, gets the
// tokens it gets alone).
TEST_F(PromptMethodsConformanceTest, OneMixedBatchGivesEveryRowItsSingleRowResult) {
  const std::string d = *dir_ + "/llama";
  auto ref = Ref("llama");
  ASSERT_NE(ref, nullptr);
  auto base = model::LlamaModel::Load(d + "/base", {});
  ASSERT_TRUE(base.ok()) << base.status();
  adapters::AdapterRegistry registry(base->get());
  std::map<std::string, std::shared_ptr<const adapters::Adapter>> loaded;
  for (const Kind& k : Kinds("llama")) {
    absl::Notification done;
    ASSERT_TRUE(registry.StartLoad(k.name, adapters::PathSource{d + "/" + k.name}, false,
                                   [&](absl::StatusOr<adapters::AdapterInfo> r) {
                                     EXPECT_TRUE(r.ok()) << k.name << ": " << r.status();
                                     done.Notify();
                                   }).ok());
    ASSERT_TRUE(testing::Await(done, "the adapter to load"));
    loaded[k.name] = *registry.Lookup(k.name);
  }
  auto engine_model = model::LlamaModel::Load(d + "/base", {});
  ASSERT_TRUE(engine_model.ok());
  engine::EngineOptions opts;
  opts.prefix_caching = true;
  auto eng = engine::Engine::Create(*std::move(engine_model), opts, nullptr);
  ASSERT_TRUE(eng.ok());
  const std::vector<std::string> mix = {"prefix", "__base__", "adaption_1", "lora", "prefix_proj", "prompt",
                                        "composed", "adaption_all", "prefix", "adaption_1", "__base__",
                                        "prefix_proj", "lora", "composed"};
  const auto prompts = Prompts();
  auto lease_for = [&](const std::string& name) -> std::shared_ptr<model::AdapterLease> {
    if (name == "__base__") return nullptr;
    if (name != "composed") return loaded.at(name)->Lease();
    return model::ComposedLease::Create({{loaded.at("lora")->Lease(), 0.6}, {loaded.at("lora_r4")->Lease(), -0.8}});
  };
  struct Sink : testing::CollectingSink {
    void OnTokens(std::span<const int64_t> t, std::span<const float> lp) override {
      CollectingSink::OnTokens(t, lp);
      logprobs.insert(logprobs.end(), lp.begin(), lp.end());
    }
    std::vector<float> logprobs;
  };
  auto request = [&](size_t k) {
    engine::GenerationRequest r;
    r.prompt = prompts[k % prompts.size()];
    r.sampling.max_new_tokens = kNewTokens;
    r.sampling.ignore_eos = true;
    r.sampling.return_logprobs = true;
    r.adapter = lease_for(mix[k]);
    return r;
  };
  // The compositions' single-row results.
  std::map<size_t, std::shared_ptr<Sink>> alone;
  for (size_t k = 0; k < mix.size(); ++k) {
    if (mix[k] != "composed") continue;
    alone[k] = std::make_shared<Sink>();
    ASSERT_TRUE((*eng)->Submit(request(k), alone[k]).ok());
    ASSERT_TRUE(testing::Await(alone[k]->done, "the composed row alone"));
  }
  const int64_t peak_before = (*eng)->GetStats().peak_running;
  EXPECT_LT(peak_before, static_cast<int64_t>(mix.size()));
  std::vector<std::shared_ptr<Sink>> sinks;
  for (size_t k = 0; k < mix.size(); ++k) {
    sinks.push_back(std::make_shared<Sink>());
    ASSERT_TRUE((*eng)->Submit(request(k), sinks.back()).ok());
  }
  for (size_t k = 0; k < mix.size(); ++k) {
    SCOPED_TRACE(absl::StrCat("row ", k, " (", mix[k], ")"));
    ASSERT_TRUE(testing::Await(sinks[k]->done, "the row to finish"));
    if (mix[k] == "composed") {
      EXPECT_EQ(sinks[k]->tokens, alone[k]->tokens);
      ASSERT_EQ(sinks[k]->logprobs.size(), alone[k]->logprobs.size());
      for (size_t s = 0; s < alone[k]->logprobs.size(); ++s) {
        EXPECT_NEAR(sinks[k]->logprobs[s], alone[k]->logprobs[s], kTol) << "step " << s;
      }
      // The composition is neither of its parts.
      EXPECT_NE(sinks[k]->tokens,
                ToVector(testing::ReadReference(*ref, absl::StrCat("lora.r", k % prompts.size(), ".greedy"))));
      continue;
    }
    const std::string key = absl::StrCat(mix[k], ".r", k % prompts.size(), ".");
    const std::vector<int64_t> want = ToVector(testing::ReadReference(*ref, key + "greedy"));
    EXPECT_EQ(sinks[k]->tokens, want);
    at::Tensor steps = testing::ReadReference(*ref, key + "step_logits").log_softmax(-1);
    ASSERT_EQ(sinks[k]->logprobs.size(), static_cast<size_t>(kNewTokens));
    for (int s = 0; s < kNewTokens; ++s) {
      EXPECT_NEAR(sinks[k]->logprobs[s], steps[s][want[s]].item<double>(), kTol) << "step " << s;
    }
  }
  // They ran together: every row was in the batch at once.
  EXPECT_EQ((*eng)->GetStats().peak_running, static_cast<int64_t>(mix.size()));
}

}  // namespace
}  // namespace adapterd
