// Composition conformance with PEFT, computed live: peft_reference.py makes
// LoRA adapters of different ranks and alphas on tiny Llama and Qwen2
// checkpoints, and compose_reference.py composes them in PEFT with
// add_weighted_adapter(..., combination_type="cat") (weights of both signs,
// an id given twice). adapterd serves the same compositions from the loaded
// adapters, without building one: over gRPC and HTTP its greedy tokens must
// be PEFT's and its logprobs within 1e-4; in process, a composed row in a
// step beside single-adapter and base rows (short rows through the direct
// kernel, long ones through ATen) must keep its single-row logits, and the
// engine must generate PEFT's tokens for every row of such a batch.
#include <ATen/ATen.h>
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "adapterd/v1/admin.grpc.pb.h"
#include "adapterd/v1/inference.grpc.pb.h"
#include "adapters/adapter_registry.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/engine/engine.h"
#include "server/model/composed_lease.h"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"
#include "tests/support/clients.h"
#include "tests/support/http_client.h"
#include "tests/support/reference_outputs.h"
#include "tests/support/resident_weights.h"
#include "tests/support/test_env.h"
#include "tests/support/wait.h"

namespace adapterd {
namespace {

constexpr double kTol = 1e-4;
constexpr int kNewTokens = 32;
const char kBase[] = "__base__";

struct AdapterSpec {
  std::string name;
  std::string args;  // peft_reference.py make-lora flags
};

// One composition: its name and (adapter, weight) parts. Weights are exact
// in float32, as the gRPC field carries them.
struct Composition {
  std::string name;
  std::vector<std::pair<std::string, double>> parts;
};

struct ComposeSetup {
  std::string arch;
  std::vector<AdapterSpec> adapters;
  std::vector<Composition> compositions;
  // What each prompt row runs in the mixed step and the mixed engine batch:
  // a composition, an adapter or __base__.
  std::vector<std::string> mixed;
};
void PrintTo(const ComposeSetup& s, std::ostream* os) { *os << s.arch; }

std::vector<std::vector<int64_t>> Prompts() {
  return {{5, 17, 99, 3}, {42}, {7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 200, 201}, {100, 3, 77, 21, 9}};
}

at::Tensor Read(const model::SafetensorsFile& f, const std::string& name) { return testing::ReadReference(f, name); }

std::string ComposeArg(const std::vector<Composition>& comps) {
  std::vector<std::string> items;
  for (const Composition& c : comps) {
    std::vector<std::string> parts;
    for (const auto& [id, w] : c.parts) parts.push_back(absl::StrCat(id, ":", w));
    items.push_back(absl::StrCat(c.name, "=", absl::StrJoin(parts, ",")));
  }
  return absl::StrJoin(items, ";");
}

class ComposeConformanceTest : public ::testing::TestWithParam<ComposeSetup> {
 protected:
  // Makes the base and the adapters, and runs the reference.
  void SetUp() override {
    ADAPTERD_REQUIRE_REFERENCE();
    const ComposeSetup& setup = GetParam();
    dir_ = testing::MakeTempDir("compose-" + setup.arch);
    base_dir_ = dir_ + "/base";
    auto made = testing::RunReference(absl::StrCat("make-model --arch ", setup.arch, " --seed 11 --out ", base_dir_));
    ASSERT_TRUE(made.ok()) << made.status();
    const std::string py = *testing::ReferencePython();
    const std::string scripts = testing::SourceDir() + "/tests/conformance/";
    std::vector<std::string> adapter_args;
    for (size_t i = 0; i < setup.adapters.size(); ++i) {
      const AdapterSpec& a = setup.adapters[i];
      auto r = testing::RunCommand(absl::StrCat(py, " ", scripts, "peft_reference.py make-lora --model ", base_dir_,
                                                " --out ", dir_, "/", a.name, " --seed ", 200 + i, " ", a.args));
      ASSERT_TRUE(r.ok()) << r.status();
      adapter_args.push_back(absl::StrCat(a.name, "=", dir_, "/", a.name));
    }
    testing::WritePrompts(dir_ + "/prompts.json", Prompts());
    auto ref_run = testing::RunCommand(absl::StrCat(
        py, " ", scripts, "compose_reference.py reference --model ", base_dir_, " --adapters ",
        absl::StrJoin(adapter_args, ","), " --prompts ", dir_, "/prompts.json --out ", dir_,
        "/ref.safetensors --new-tokens ", kNewTokens, " --compose '", ComposeArg(setup.compositions), "'"));
    ASSERT_TRUE(ref_run.ok()) << ref_run.status();
    auto ref = model::SafetensorsFile::Open(dir_ + "/ref.safetensors");
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = *std::move(ref);
  }

  // Checks tokens and logprobs of row `i` of `name` against the reference.
  void ExpectReference(const std::string& name, size_t i, const std::vector<int64_t>& tokens,
                       const std::vector<double>& logprobs) {
    const std::string key = absl::StrCat(name, ".r", i, ".");
    const std::vector<int64_t> want = testing::ToVector(Read(*ref_, key + "greedy"));
    EXPECT_EQ(tokens, want);
    at::Tensor steps = Read(*ref_, key + "step_logits").log_softmax(-1);
    ASSERT_EQ(logprobs.size(), want.size());
    for (size_t s = 0; s < want.size(); ++s) {
      EXPECT_NEAR(logprobs[s], steps[static_cast<int64_t>(s)][want[s]].item<double>(), kTol) << "step " << s;
    }
  }

  const Composition* FindComposition(const std::string& name) const {
    for (const Composition& c : GetParam().compositions) {
      if (c.name == name) return &c;
    }
    return nullptr;
  }

  using Loaded = std::map<std::string, std::shared_ptr<const adapters::Adapter>>;
  void CheckServer();
  void CheckInProcess();
  void CheckEngine(const Loaded& loaded);

  std::string dir_, base_dir_;
  std::unique_ptr<model::SafetensorsFile> ref_;
};

// The real server, over gRPC and HTTP.
void ComposeConformanceTest::CheckServer() {
  const ComposeSetup& setup = GetParam();
  const auto prompts = Prompts();
  auto server = testing::ServerProcess::Start({"--model=" + base_dir_});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = adapterd::testing::Connect((*server)->grpc_address());
  auto admin = v1::Admin::NewStub(channel);
  auto inference = v1::Inference::NewStub(channel);
  for (const AdapterSpec& a : setup.adapters) {
    v1::AdapterInfo info;
    grpc::Status st = testing::LoadAdapterByPath(*admin, a.name, dir_ + "/" + a.name, &info);
    ASSERT_TRUE(st.ok()) << a.name << ": " << st.error_message();
  }
  for (const Composition& c : setup.compositions) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      SCOPED_TRACE(absl::StrCat(c.name, " prompt ", i, " over gRPC"));
      v1::GenerateRequest req;
      for (const auto& [id, w] : c.parts) {
        v1::AdapterWeight* aw = req.add_adapters();
        aw->set_adapter_id(id);
        aw->set_weight(static_cast<float>(w));
      }
      for (int64_t t : prompts[i]) req.add_prompt_token_ids(static_cast<uint32_t>(t));
      req.mutable_sampling()->set_max_new_tokens(kNewTokens);
      req.mutable_sampling()->set_ignore_eos(true);
      req.mutable_sampling()->set_return_logprobs(true);
      v1::GenerateResponse resp;
      grpc::ClientContext ctx;
      grpc::Status st = inference->Generate(&ctx, req, &resp);
      ASSERT_TRUE(st.ok()) << st.error_message();
      ExpectReference(c.name, i, {resp.token_ids().begin(), resp.token_ids().end()},
                      {resp.logprobs().begin(), resp.logprobs().end()});
    }
    // The same over HTTP (one prompt), as an OpenAI completion with `adapters`.
    SCOPED_TRACE(c.name + " over HTTP");
    nlohmann::json body = {{"prompt", prompts[2]}, {"max_tokens", kNewTokens}, {"temperature", 0},
                           {"ignore_eos", true}, {"logprobs", 0}, {"return_token_ids", true},
                           {"adapters", nlohmann::json::array()}};
    for (const auto& [id, w] : c.parts) body["adapters"].push_back({{"id", id}, {"weight", w}});
    auto reply = testing::HttpCall((*server)->http_address(), "POST", "/v1/completions", body.dump(),
                                   {{"Content-Type", "application/json"}});
    ASSERT_TRUE(reply.ok()) << reply.status();
    ASSERT_EQ(reply->status, 200) << reply->body;
    const nlohmann::json choice = nlohmann::json::parse(reply->body)["choices"][0];
    ExpectReference(c.name, 2, choice["token_ids"].get<std::vector<int64_t>>(),
                    choice["logprobs"]["token_logprobs"].get<std::vector<double>>());
  }
  EXPECT_EQ((*server)->Stop(SIGTERM), 0);
}

// In process: single and mixed steps, then the engine (CheckEngine).
void ComposeConformanceTest::CheckInProcess() {
  const ComposeSetup& setup = GetParam();
  const auto prompts = Prompts();
  auto base = model::LlamaModel::Load(base_dir_, {});
  ASSERT_TRUE(base.ok()) << base.status();
  adapters::AdapterRegistry registry(base->get());
  Loaded loaded;
  for (const AdapterSpec& a : setup.adapters) {
    absl::Notification done;
    ASSERT_TRUE(registry.StartLoad(a.name, adapters::PathSource{dir_ + "/" + a.name}, false,
                                   [&](absl::StatusOr<adapters::AdapterInfo> r) {
                                     EXPECT_TRUE(r.ok()) << r.status();
                                     done.Notify();
                                   }).ok());
    EXPECT_TRUE(testing::Await(done, "done"));
    loaded[a.name] = *registry.Lookup(a.name);
  }
  // Composites built straight from the resident weights.
  std::map<std::string, std::shared_ptr<const model::AdapterWeights>> composites;
  for (const Composition& c : setup.compositions) {
    std::vector<model::WeightedWeights> parts;
    for (const auto& [id, w] : c.parts) parts.push_back({id, &testing::ResidentWeights(*loaded.at(id)), w});
    auto composite = model::ComposeLora(parts);
    ASSERT_TRUE(composite.ok()) << composite.status();
    composites[c.name] = *std::move(composite);
  }
  auto weights_of = [&](const std::string& name) -> const model::AdapterWeights* {
    if (name == kBase) return nullptr;
    if (auto it = composites.find(name); it != composites.end()) return it->second.get();
    return &testing::ResidentWeights(*loaded.at(name));
  };
  auto kv = model::KvCache::Create((*base)->config(), 16, 32 << 20, at::kFloat, at::kCPU);
  ASSERT_TRUE(kv.ok());
  // Every composition alone, then one step of every row of the mixed setup.
  for (const Composition& c : setup.compositions) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::vector<int32_t> blocks;
      ASSERT_TRUE((*kv)->Reserve(blocks, static_cast<int64_t>(prompts[i].size())));
      model::ForwardBatch b;
      b.token_ids = prompts[i];
      b.seqs.push_back({static_cast<int64_t>(prompts[i].size()), 0, &blocks, true});
      b.adapters.push_back(weights_of(c.name));
      auto logits = (*base)->Forward(b, **kv);
      ASSERT_TRUE(logits.ok());
      EXPECT_LE((logits->select(0, 0) - Read(*ref_, absl::StrCat(c.name, ".r", i, ".last_logits"))).abs().max().item<double>(),
                kTol) << c.name << " prompt " << i;
      (*kv)->Free(blocks);
    }
  }
  std::vector<std::vector<int32_t>> blocks(prompts.size());
  model::ForwardBatch mixed;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE((*kv)->Reserve(blocks[i], static_cast<int64_t>(prompts[i].size())));
    mixed.token_ids.insert(mixed.token_ids.end(), prompts[i].begin(), prompts[i].end());
    mixed.seqs.push_back({static_cast<int64_t>(prompts[i].size()), 0, &blocks[i], true});
    mixed.adapters.push_back(weights_of(setup.mixed[i]));
  }
  auto logits = (*base)->Forward(mixed, **kv);
  ASSERT_TRUE(logits.ok());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_LE((logits->select(0, static_cast<int64_t>(i)) -
               Read(*ref_, absl::StrCat(setup.mixed[i], ".r", i, ".last_logits"))).abs().max().item<double>(), kTol)
        << "mixed row " << i << " (" << setup.mixed[i] << ") vs its single-row result";
  }
  for (auto& b : blocks) (*kv)->Free(b);

  CheckEngine(loaded);
}

// The engine runs the mixed setup as one batch, composed rows through a
// ComposedLease over the registry's leases, and every row generates its
// single-row reference tokens.
void ComposeConformanceTest::CheckEngine(const Loaded& loaded) {
  const ComposeSetup& setup = GetParam();
  const auto prompts = Prompts();
  auto engine_model = model::LlamaModel::Load(base_dir_, {});
  ASSERT_TRUE(engine_model.ok());
  auto eng = engine::Engine::Create(*std::move(engine_model), {}, nullptr);
  ASSERT_TRUE(eng.ok());
  std::vector<std::shared_ptr<testing::CollectingSink>> sinks;
  for (size_t i = 0; i < prompts.size(); ++i) {
    engine::GenerationRequest r;
    r.prompt = prompts[i];
    r.sampling.max_new_tokens = kNewTokens;
    r.sampling.ignore_eos = true;
    const std::string& name = setup.mixed[i];
    if (const Composition* c = FindComposition(name)) {
      std::vector<model::WeightedLease> leases;
      for (const auto& [id, w] : c->parts) leases.push_back({loaded.at(id)->Lease(), w});
      r.adapter = model::ComposedLease::Create(std::move(leases));
    } else if (name != kBase) {
      r.adapter = loaded.at(name)->Lease();
    }
    sinks.push_back(std::make_shared<testing::CollectingSink>());
    ASSERT_TRUE((*eng)->Submit(r, sinks.back()).ok());
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_TRUE(testing::Await(sinks[i]->done, "sinks[i]->done"));
    EXPECT_TRUE(sinks[i]->finish.status.ok()) << sinks[i]->finish.status;
    EXPECT_EQ(sinks[i]->tokens, testing::ToVector(Read(*ref_, absl::StrCat(setup.mixed[i], ".r", i, ".greedy"))))
        << "row " << i << " (" << setup.mixed[i] << ")";
  }
}

TEST_P(ComposeConformanceTest, MatchesPeft) {
  CheckServer();
  CheckInProcess();
}

INSTANTIATE_TEST_SUITE_P(
    Peft, ComposeConformanceTest,
    ::testing::Values(
        ComposeSetup{"llama",
                     {{"qv_r4", "--r 4 --alpha 8 --targets q_proj,v_proj"},
                      {"all_r8", "--r 8 --alpha 32 --targets all-linear --rank-pattern '{\"q_proj\": 2}' "
                                 "--alpha-pattern '{\"v_proj\": 3}'"},
                      {"rs_r16", "--r 16 --alpha 8 --targets q_proj,k_proj,o_proj,down_proj --rslora"}},
                     {{"two", {{"qv_r4", 0.75}, {"all_r8", -0.5}}},
                      {"three", {{"all_r8", 1.25}, {"qv_r4", 0.5}, {"rs_r16", -0.75}}},
                      // The same id twice: its deltas add up, as in PEFT.
                      {"dup", {{"qv_r4", 0.5}, {"all_r8", 1.0}, {"qv_r4", 0.25}}}},
                     {"three", "two", "three", "__base__"}},
        ComposeSetup{"qwen2",
                     {{"q_all_r8", "--r 8 --alpha 16 --targets all-linear"},
                      {"q_qkv_r4", "--r 4 --alpha 4 --targets q_proj,k_proj,v_proj"}},
                     {{"two", {{"q_all_r8", 0.5}, {"q_qkv_r4", -1.5}}}},
                     {"two", "q_all_r8", "two", "__base__"}}),
    [](const ::testing::TestParamInfo<ComposeSetup>& info) { return info.param.arch; });

}  // namespace
}  // namespace adapterd
