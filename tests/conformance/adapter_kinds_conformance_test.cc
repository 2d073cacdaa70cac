// Conformance of the non-LoRA adapter kinds, computed live: AdapterHub
// `adapters` creates Pfeiffer (seq_bn), Houlsby (double_seq_bn), parallel and
// option-heavy bottleneck adapters with random (not near-identity) weights,
// and PEFT creates IA3 and prompt-tuning adapters, on a tiny Llama checkpoint.
// adapterd loads the same files through its Admin API and must agree with the
// libraries on 32 greedy tokens and on logits within 1e-4; one batch mixing
// the base, LoRA, Houlsby, Pfeiffer, IA3 and prompt tuning must give every row
// its single-row result. Bad files get a clear error and leave the registry
// as it was.
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
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/engine/engine.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"
#include "tests/support/clients.h"
#include "tests/support/reference_outputs.h"
#include "tests/support/resident_weights.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd {
namespace {

namespace fs = std::filesystem;
constexpr double kTol = 1e-4;
constexpr int kNewTokens = 32;

struct Kind {
  std::string name;
  std::string script;  // adapters_reference.py or peft_reference.py
  std::string args;    // its make-* command line after --model/--out/--seed
  std::string type;    // AdapterInfo.type
  int64_t virtual_tokens = 0;
};

std::vector<Kind> Kinds() {
  return {
      {"pfeiffer", "adapters_reference.py", "make-bottleneck --config seq_bn --reduction-factor 8 --non-linearity relu --name pf", "bottleneck"},
      {"houlsby", "adapters_reference.py", "make-bottleneck --config double_seq_bn --reduction-factor 4 --name ho", "bottleneck"},
      {"parallel", "adapters_reference.py", "make-bottleneck --config par_bn --reduction-factor 16 --non-linearity gelu --set mh_adapter=true --name par", "bottleneck"},
      {"options", "adapters_reference.py",
       "make-bottleneck --config seq_bn --reduction-factor '{\"0\": 4, \"default\": 16}' --non-linearity gelu_new "
       "--set ln_before=true --set ln_after=true --set 'scaling=\"channel\"' --set adapter_residual_before_ln=true --name opt",
       "bottleneck"},
      {"misc", "adapters_reference.py",
       "make-bottleneck --config double_seq_bn --reduction-factor 2 --non-linearity tanh --set original_ln_before=true "
       "--set original_ln_after=false --set residual_before_ln=false --set 'scaling=\"learned\"' --set 'leave_out=[1]' --name misc",
       "bottleneck"},
      {"lora", "peft_reference.py", "make-lora --r 8 --alpha 16 --targets all-linear", "lora"},
      {"ia3", "peft_reference.py", "make-ia3", "ia3"},
      {"ia3_wide", "peft_reference.py", "make-ia3 --targets q_proj,o_proj,gate_proj,up_proj --feedforward up_proj", "ia3"},
      {"prompt", "peft_reference.py", "make-prompt-tuning --virtual-tokens 5", "prompt_tuning", 5},
  };
}

std::vector<std::vector<int64_t>> Prompts() {
  return {{5, 17, 99, 3}, {42}, {7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 200, 201}};
}

using testing::ToVector;

at::Tensor Read(const model::SafetensorsFile& f, const std::string& name) { return testing::ReadReference(f, name); }

std::string WeightsFile(const std::string& dir) {
  return fs::exists(dir + "/adapter.safetensors") ? "adapter.safetensors" : "adapter_model.safetensors";
}

std::vector<std::string> ListIds(v1::Admin::Stub& admin) {
  grpc::ClientContext ctx;
  v1::ListAdaptersResponse resp;
  EXPECT_TRUE(admin.ListAdapters(&ctx, v1::ListAdaptersRequest(), &resp).ok());
  std::vector<std::string> ids;
  for (const auto& a : resp.adapters()) ids.push_back(a.adapter_id());
  std::sort(ids.begin(), ids.end());
  return ids;
}

// Copies an adapter directory, then lets `edit` change its config JSON and
// tensor list.
std::string Variant(const std::string& src, const std::string& dst,
                    const std::function<void(nlohmann::json&)>& edit_config, const std::string& drop_tensor = "") {
  fs::create_directories(dst);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(src + "/adapter_config.json"));
  edit_config(cfg);
  std::ofstream(dst + "/adapter_config.json") << cfg.dump();
  const std::string wf = WeightsFile(src);
  auto f = model::SafetensorsFile::Open(src + "/" + wf);
  EXPECT_TRUE(f.ok());
  std::vector<model::StTensorToWrite> keep;
  for (const model::StTensorInfo& t : (*f)->tensors()) {
    if (t.name == drop_tensor) continue;
    auto d = (*f)->Data(t);
    keep.push_back({t.name, t.dtype, t.shape, std::string_view(reinterpret_cast<const char*>(d.data()), d.size())});
  }
  EXPECT_TRUE(model::WriteSafetensors(dst + "/" + wf, keep).ok());
  return dst;
}

class AdapterKindsConformanceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir("adapter-kinds"));
    ref_error_ = new std::string();
    auto py = testing::ReferencePython();
    if (!py.ok()) return;
    const std::string base = *dir_ + "/base";
    auto made = testing::RunReference(absl::StrCat("make-model --arch llama --seed 11 --out ", base));
    if (!made.ok()) return void(*ref_error_ = made.status().ToString());
    std::vector<std::string> hub, peft;
    int seed = 300;
    for (const Kind& k : Kinds()) {
      auto r = testing::RunCommand(absl::StrCat(*py, " ", testing::SourceDir(), "/tests/conformance/", k.script, " ",
                                                k.args, " --model ", base, " --out ", *dir_, "/", k.name,
                                                " --seed ", seed++));
      if (!r.ok()) return void(*ref_error_ = absl::StrCat(k.name, ": ", r.status().ToString()));
      (k.script == "peft_reference.py" ? peft : hub).push_back(absl::StrCat(k.name, "=", *dir_, "/", k.name));
    }
    testing::WritePrompts(*dir_ + "/prompts.json", Prompts());
    for (auto [script, list, out] : {std::tuple{"adapters_reference.py", &hub, "hub.safetensors"},
                                     std::tuple{"peft_reference.py", &peft, "peft.safetensors"}}) {
      auto r = testing::RunCommand(absl::StrCat(*py, " ", testing::SourceDir(), "/tests/conformance/", script,
                                                " reference --model ", base, " --adapters ",
                                                absl::StrJoin(*list, ","), " --prompts ", *dir_,
                                                "/prompts.json --out ", *dir_, "/", out, " --new-tokens ", kNewTokens));
      if (!r.ok()) return void(*ref_error_ = absl::StrCat(script, ": ", r.status().ToString()));
    }
  }

  void SetUp() override {
    ADAPTERD_REQUIRE_REFERENCE();
    ASSERT_TRUE(ref_error_->empty()) << *ref_error_;
    for (const char* name : {"hub.safetensors", "peft.safetensors"}) {
      auto f = model::SafetensorsFile::Open(*dir_ + "/" + name);
      ASSERT_TRUE(f.ok()) << f.status();
      refs_.push_back(*std::move(f));
    }
  }

  const model::SafetensorsFile& RefFor(const std::string& kind) const {
    for (const Kind& k : Kinds()) {
      if (k.name == kind) return *refs_[k.script == "peft_reference.py" ? 1 : 0];
    }
    return *refs_[1];  // __base__
  }

  static std::string* dir_;
  static std::string* ref_error_;
  std::vector<std::unique_ptr<model::SafetensorsFile>> refs_;
};

std::string* AdapterKindsConformanceTest::dir_ = nullptr;
std::string* AdapterKindsConformanceTest::ref_error_ = nullptr;

// Over gRPC: every kind loads by path and by upload, reports its kind, and
// generates the library's greedy tokens with its step log-probabilities.
TEST_F(AdapterKindsConformanceTest, ServerMatchesLibraries) {
  const std::string base = *dir_ + "/base";
  auto server = testing::ServerProcess::Start({"--model=" + base});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = adapterd::testing::Connect((*server)->grpc_address());
  auto admin = v1::Admin::NewStub(channel);
  auto inference = v1::Inference::NewStub(channel);
  const auto prompts = Prompts();
  for (const Kind& k : Kinds()) {
    SCOPED_TRACE(k.name);
    v1::AdapterInfo by_path, by_upload;
    grpc::Status st = testing::LoadAdapterByPath(*admin, k.name, *dir_ + "/" + k.name, &by_path);
    ASSERT_TRUE(st.ok()) << st.error_message();
    st = testing::UploadAdapterDir(*admin, k.name + "-up", *dir_ + "/" + k.name, &by_upload);
    ASSERT_TRUE(st.ok()) << "upload: " << st.error_message();
    EXPECT_EQ(by_path.type(), k.type);
    EXPECT_EQ(by_upload.type(), k.type);
    EXPECT_EQ(by_path.bytes(), by_upload.bytes());
    EXPECT_EQ(by_path.num_virtual_tokens(), static_cast<uint32_t>(k.virtual_tokens));
    if (k.type == "bottleneck") {
      EXPECT_GT(by_path.bottleneck_widths_size(), 0);
      EXPECT_GT(by_path.locations_size(), 0);
      EXPECT_FALSE(by_path.non_linearity().empty());
    }
    if (k.type == "ia3") {
      EXPECT_GT(by_path.target_modules_size(), 0);
    }
    const model::SafetensorsFile& ref = RefFor(k.name);
    for (const std::string& id : {k.name, k.name + "-up"}) {
      for (size_t i = 0; i < prompts.size(); ++i) {
        SCOPED_TRACE(absl::StrCat(id, " prompt ", i));
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
        std::vector<int64_t> want = ToVector(Read(ref, key + "greedy"));
        EXPECT_EQ(std::vector<int64_t>(resp.token_ids().begin(), resp.token_ids().end()), want);
        at::Tensor steps = Read(ref, key + "step_logits").log_softmax(-1);
        for (int s = 0; s < resp.logprobs_size() && s < kNewTokens; ++s) {
          EXPECT_NEAR(resp.logprobs(s), steps[s][want[s]].item<double>(), kTol) << "step " << s;
        }
        EXPECT_EQ(resp.usage().prompt_tokens(), prompts[i].size());
        EXPECT_EQ(resp.usage().virtual_tokens(), static_cast<uint32_t>(k.virtual_tokens));
      }
    }
    // Each adapter changes the output: its logits are not the base's.
    EXPECT_GT((Read(ref, k.name + ".r0.last_logits") - Read(ref, "__base__.r0.last_logits")).abs().max().item<double>(),
              1e-2);
  }

  // Bad files: a clear status naming the key or tensor, and the registry unchanged.
  const std::vector<std::string> before = ListIds(*admin);
  struct Bad {
    std::string what;
    std::string dir;
    grpc::StatusCode code;
    std::vector<std::string> words;
  };
  const std::string pf = *dir_ + "/pfeiffer";
  const std::vector<Bad> bad = {
      {"use_gating", Variant(pf, *dir_ + "/bad-gating", [](nlohmann::json& c) { c["config"]["use_gating"] = true; }),
       grpc::StatusCode::INVALID_ARGUMENT, {"config.use_gating"}},
      {"phm_layer", Variant(pf, *dir_ + "/bad-phm", [](nlohmann::json& c) { c["config"]["phm_layer"] = true; }),
       grpc::StatusCode::INVALID_ARGUMENT, {"config.phm_layer"}},
      {"non_linearity", Variant(pf, *dir_ + "/bad-act", [](nlohmann::json& c) { c["config"]["non_linearity"] = "mish"; }),
       grpc::StatusCode::INVALID_ARGUMENT, {"config.non_linearity", "mish"}},
      {"hidden_size", Variant(pf, *dir_ + "/bad-hidden", [](nlohmann::json& c) { c["hidden_size"] = 4096; }),
       grpc::StatusCode::FAILED_PRECONDITION, {"hidden_size", "4096"}},
      {"missing tensor",
       Variant(pf, *dir_ + "/bad-missing", [](nlohmann::json&) {}, "model.layers.1.output_adapters.adapters.pf.adapter_up.weight"),
       grpc::StatusCode::INVALID_ARGUMENT, {"missing tensor", "model.layers.1.output_adapters.adapters.pf.adapter_up.weight"}},
      {"ia3 missing tensor",
       Variant(*dir_ + "/ia3", *dir_ + "/bad-ia3", [](nlohmann::json&) {}, "base_model.model.model.layers.0.mlp.down_proj.ia3_l"),
       grpc::StatusCode::INVALID_ARGUMENT, {"missing tensor", "model.layers.0.mlp.down_proj.ia3_l"}},
      {"prompt token_dim", Variant(*dir_ + "/prompt", *dir_ + "/bad-prompt", [](nlohmann::json& c) { c["token_dim"] = 65; }),
       grpc::StatusCode::FAILED_PRECONDITION, {"token_dim", "65"}},
      {"unsupported type", Variant(*dir_ + "/prompt", *dir_ + "/bad-type", [](nlohmann::json& c) { c["peft_type"] = "LOHA"; }),
       grpc::StatusCode::INVALID_ARGUMENT, {"LOHA", "not supported"}},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    v1::AdapterInfo info;
    grpc::Status st = testing::LoadAdapterByPath(*admin, "bad", b.dir, &info);
    EXPECT_EQ(st.error_code(), b.code) << st.error_message();
    for (const std::string& w : b.words) EXPECT_THAT(st.error_message(), ::testing::HasSubstr(w));
    EXPECT_EQ(ListIds(*admin), before);
  }
  EXPECT_EQ((*server)->Stop(SIGTERM), 0);
}

// In process: each kind's last logits against the library, then one step
// holding the base, LoRA, Houlsby, Pfeiffer, IA3 and prompt tuning, and the
// same mix generated through the engine.
TEST_F(AdapterKindsConformanceTest, MixedBatchRowsEqualSingleRows) {
  const std::string base_dir = *dir_ + "/base";
  auto base = model::LlamaModel::Load(base_dir, {});
  ASSERT_TRUE(base.ok()) << base.status();
  adapters::AdapterRegistry registry(base->get());
  std::map<std::string, std::shared_ptr<const adapters::Adapter>> loaded;
  for (const Kind& k : Kinds()) {
    absl::Notification done;
    ASSERT_TRUE(registry.StartLoad(k.name, adapters::PathSource{*dir_ + "/" + k.name}, false,
                                   [&](absl::StatusOr<adapters::AdapterInfo> r) {
                                     EXPECT_TRUE(r.ok()) << k.name << ": " << r.status();
                                     done.Notify();
                                   }).ok());
    EXPECT_TRUE(testing::Await(done, "done"));
    loaded[k.name] = *registry.Lookup(k.name);
  }
  auto weights_of = [&](const std::string& name) -> const model::AdapterWeights* {
    return name == "__base__" ? nullptr : &testing::ResidentWeights(*loaded.at(name));
  };
  auto kv = model::KvCache::Create((*base)->config(), 16, 32 << 20, at::kFloat, at::kCPU);
  ASSERT_TRUE(kv.ok());
  const auto prompts = Prompts();
  // A prompt as the model sees it: a prompt-tuning adapter's placeholders first.
  auto tokens_for = [&](const std::string& name, size_t i) {
    const model::AdapterWeights* w = weights_of(name);
    std::vector<int64_t> t(static_cast<size_t>(w ? w->num_virtual_tokens() : 0), 0);
    t.insert(t.end(), prompts[i].begin(), prompts[i].end());
    return t;
  };
  std::vector<std::string> names = {"__base__"};
  for (const Kind& k : Kinds()) names.push_back(k.name);
  for (const std::string& name : names) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::vector<int64_t> t = tokens_for(name, i);
      std::vector<int32_t> blocks;
      ASSERT_TRUE((*kv)->Reserve(blocks, static_cast<int64_t>(t.size())));
      model::ForwardBatch b;
      b.token_ids = t;
      b.seqs.push_back({static_cast<int64_t>(t.size()), 0, &blocks, true});
      b.adapters.push_back(weights_of(name));
      auto logits = (*base)->Forward(b, **kv);
      ASSERT_TRUE(logits.ok());
      EXPECT_LE((logits->select(0, 0) - Read(RefFor(name), absl::StrCat(name, ".r", i, ".last_logits")))
                    .abs().max().item<double>(), kTol) << name << " prompt " << i;
      (*kv)->Free(blocks);
    }
  }
  // One step: every kind and the base, rows interleaved with the prompts.
  const std::vector<std::string> mix = {"houlsby", "__base__", "lora", "pfeiffer", "ia3", "prompt",
                                        "parallel", "ia3_wide", "options", "misc", "prompt", "houlsby"};
  std::vector<std::vector<int32_t>> blocks(mix.size());
  model::ForwardBatch batch;
  for (size_t k = 0; k < mix.size(); ++k) {
    const std::vector<int64_t> t = tokens_for(mix[k], k % prompts.size());
    ASSERT_TRUE((*kv)->Reserve(blocks[k], static_cast<int64_t>(t.size())));
    batch.token_ids.insert(batch.token_ids.end(), t.begin(), t.end());
    batch.seqs.push_back({static_cast<int64_t>(t.size()), 0, &blocks[k], true});
    batch.adapters.push_back(weights_of(mix[k]));
  }
  auto logits = (*base)->Forward(batch, **kv);
  ASSERT_TRUE(logits.ok());
  for (size_t k = 0; k < mix.size(); ++k) {
    EXPECT_LE((logits->select(0, static_cast<int64_t>(k)) -
               Read(RefFor(mix[k]), absl::StrCat(mix[k], ".r", k % prompts.size(), ".last_logits")))
                  .abs().max().item<double>(), kTol)
        << "row " << k << " (" << mix[k] << ") in the mixed step";
  }
  for (auto& b : blocks) (*kv)->Free(b);

  // The same mix generated concurrently through the engine (decode steps mix
  // every kind) gives each row the library's single-row greedy tokens.
  auto engine_model = model::LlamaModel::Load(base_dir, {});
  ASSERT_TRUE(engine_model.ok());
  auto eng = engine::Engine::Create(*std::move(engine_model), {}, nullptr);
  ASSERT_TRUE(eng.ok());
  using Sink = testing::CollectingSink;
  std::vector<std::shared_ptr<Sink>> sinks;
  for (size_t k = 0; k < mix.size(); ++k) {
    engine::GenerationRequest r;
    r.prompt = prompts[k % prompts.size()];
    r.sampling.max_new_tokens = kNewTokens;
    r.sampling.ignore_eos = true;
    if (mix[k] != "__base__") r.adapter = loaded.at(mix[k])->Lease();
    sinks.push_back(std::make_shared<Sink>());
    ASSERT_TRUE((*eng)->Submit(r, sinks.back()).ok());
  }
  for (size_t k = 0; k < mix.size(); ++k) {
    EXPECT_TRUE(testing::Await(sinks[k]->done, "sinks[k]->done"));
    EXPECT_EQ(sinks[k]->tokens,
              ToVector(Read(RefFor(mix[k]), absl::StrCat(mix[k], ".r", k % prompts.size(), ".greedy"))))
        << "row " << k << " (" << mix[k] << ")";
    EXPECT_EQ(sinks[k]->finish.prompt_tokens, static_cast<int64_t>(prompts[k % prompts.size()].size()));
    EXPECT_EQ(sinks[k]->finish.virtual_tokens, mix[k] == "prompt" ? 5 : 0);
  }
}

}  // namespace
}  // namespace adapterd
