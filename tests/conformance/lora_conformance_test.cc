// LoRA/DoRA conformance with PEFT, computed live: peft_reference.py creates
// adapters with non-zero deltas on tiny Llama and Qwen2 checkpoints and runs
// them in PeftModel. adapterd loads the same files through its Admin API (by
// path and by upload) and must agree on logits within 1e-4 and on 32 greedy
// tokens; a batch mixing the base and several adapters must give every row
// its single-row result and PEFT's adapter_names result.
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

struct AdapterSpec {
  std::string name;
  std::string args;  // peft_reference.py make-lora flags
  bool dora = false;
};

struct LoraSetup {
  std::string arch;
  std::vector<AdapterSpec> adapters;
  std::vector<std::string> mixed;  // adapter per prompt row in the PEFT mixed batch
};
void PrintTo(const LoraSetup& s, std::ostream* os) { *os << s.arch; }

std::vector<std::vector<int64_t>> Prompts() {
  return {{5, 17, 99, 3}, {42}, {7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 200, 201}, {100, 3, 77, 21, 9}};
}

using testing::ToVector;

at::Tensor Read(const model::SafetensorsFile& f, const std::string& name) { return testing::ReadReference(f, name); }

class LoraConformanceTest : public ::testing::TestWithParam<LoraSetup> {};

TEST_P(LoraConformanceTest, MatchesPeft) {
  ADAPTERD_REQUIRE_REFERENCE();
  const LoraSetup& setup = GetParam();
  const std::string dir = testing::MakeTempDir("lora-" + setup.arch);
  const std::string base_dir = dir + "/base";
  auto made = testing::RunReference(absl::StrCat("make-model --arch ", setup.arch, " --seed 11 --out ", base_dir));
  ASSERT_TRUE(made.ok()) << made.status();
  std::vector<std::string> adapter_args;
  for (size_t i = 0; i < setup.adapters.size(); ++i) {
    const AdapterSpec& a = setup.adapters[i];
    auto r = testing::RunCommand(absl::StrCat(
        *testing::ReferencePython(), " ", testing::SourceDir(), "/tests/conformance/peft_reference.py make-lora --model ",
        base_dir, " --out ", dir, "/", a.name, " --seed ", 100 + i, " ", a.args));
    ASSERT_TRUE(r.ok()) << r.status();
    adapter_args.push_back(absl::StrCat(a.name, "=", dir, "/", a.name));
  }
  testing::WritePrompts(dir + "/prompts.json", Prompts());
  auto ref_run = testing::RunCommand(absl::StrCat(
      *testing::ReferencePython(), " ", testing::SourceDir(), "/tests/conformance/peft_reference.py reference --model ",
      base_dir, " --adapters ", absl::StrJoin(adapter_args, ","), " --prompts ", dir,
      "/prompts.json --out ", dir, "/ref.safetensors --new-tokens ", kNewTokens, " --mixed ",
      absl::StrJoin(setup.mixed, ",")));
  ASSERT_TRUE(ref_run.ok()) << ref_run.status();
  auto ref = model::SafetensorsFile::Open(dir + "/ref.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();
  const auto prompts = Prompts();

  // --- Through the real server: Admin loads by path and by upload, then greedy
  //     tokens and their logprobs over gRPC.
  auto server = testing::ServerProcess::Start({"--model=" + base_dir});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = adapterd::testing::Connect((*server)->grpc_address());
  auto admin = v1::Admin::NewStub(channel);
  auto inference = v1::Inference::NewStub(channel);
  for (const AdapterSpec& a : setup.adapters) {
    v1::AdapterInfo by_path, by_upload;
    grpc::Status st = testing::LoadAdapterByPath(*admin, a.name, dir + "/" + a.name, &by_path);
    ASSERT_TRUE(st.ok()) << a.name << ": " << st.error_message();
    st = testing::UploadAdapterDir(*admin, a.name + "-up", dir + "/" + a.name, &by_upload);
    ASSERT_TRUE(st.ok()) << a.name << " upload: " << st.error_message();
    EXPECT_EQ(by_path.state(), v1::ADAPTER_STATE_READY);
    EXPECT_EQ(by_path.type(), a.dora ? "dora" : "lora");
    EXPECT_EQ(by_path.bytes(), by_upload.bytes());
    EXPECT_GT(by_path.bytes(), 0u);
    EXPECT_EQ(by_upload.source(), "upload");
    for (const std::string& id : {a.name, a.name + "-up"}) {
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
        const std::string key = absl::StrCat(a.name, ".r", i, ".");
        std::vector<int64_t> want = ToVector(Read(**ref, key + "greedy"));
        EXPECT_EQ(std::vector<int64_t>(resp.token_ids().begin(), resp.token_ids().end()), want);
        at::Tensor steps = Read(**ref, key + "step_logits").log_softmax(-1);
        for (int s = 0; s < resp.logprobs_size() && s < kNewTokens; ++s) {
          EXPECT_NEAR(resp.logprobs(s), steps[s][want[s]].item<double>(), kTol) << "step " << s;
        }
      }
    }
  }
  // The adapters changed the output: at least one differs from the base.
  bool any_differs = false;
  for (const AdapterSpec& a : setup.adapters) {
    any_differs |= !at::equal(Read(**ref, a.name + ".r0.greedy"), Read(**ref, "__base__.r0.greedy"));
  }
  EXPECT_TRUE(any_differs);
  EXPECT_EQ((*server)->Stop(SIGTERM), 0);

  // --- In process: logits through the same loader, single rows and one mixed
  //     batch, with each of the CPU's delta backends: ATen products and row
  //     kernels, and the segmented kernels' tables run by their host version.
  //     The loader's model has a slot pool with fewer slots than adapters, so
  //     the rows read weights in slots and weights of their own side by side.
  model::ModelOptions loader_options;
  loader_options.adapter_slots = static_cast<int64_t>(setup.adapters.size()) - 1;
  loader_options.adapter_slot_rank = 8;
  auto loader_base = model::LlamaModel::Load(base_dir, loader_options);
  ASSERT_TRUE(loader_base.ok()) << loader_base.status();
  adapters::AdapterRegistry registry(loader_base->get());
  std::map<std::string, std::shared_ptr<const adapters::Adapter>> loaded;
  for (const AdapterSpec& a : setup.adapters) {
    absl::Notification done;
    ASSERT_TRUE(registry.StartLoad(a.name, adapters::PathSource{dir + "/" + a.name}, false,
                                   [&](absl::StatusOr<adapters::AdapterInfo> r) {
                                     EXPECT_TRUE(r.ok()) << r.status();
                                     done.Notify();
                                   }).ok());
    EXPECT_TRUE(testing::Await(done, "done"));
    loaded[a.name] = *registry.Lookup(a.name);
  }
  int pooled = 0;
  for (const auto& [name, adapter] : loaded) pooled += testing::ResidentWeights(*adapter).pool_slot() >= 0 ? 1 : 0;
  EXPECT_GE(pooled, 1) << "no adapter was placed in a slot";
  EXPECT_LT(pooled, static_cast<int>(loaded.size())) << "every adapter was placed in a slot";
  for (model::DeltaBackendKind kind : {model::DeltaBackendKind::kAten, model::DeltaBackendKind::kSgmv}) {
    SCOPED_TRACE(kind == model::DeltaBackendKind::kAten ? "aten delta backend" : "sgmv delta backend");
    model::ModelOptions options;
    options.delta_backend = kind;
    auto base = model::LlamaModel::Load(base_dir, options);
    ASSERT_TRUE(base.ok()) << base.status();
    auto kv = model::KvCache::Create((*base)->config(), 16, 32 << 20, at::kFloat, at::kCPU);
    ASSERT_TRUE(kv.ok());
    auto weights_of = [&](const std::string& name) -> const model::AdapterWeights* {
      return name == "__base__" ? nullptr : &testing::ResidentWeights(*loaded.at(name));
    };
    std::vector<std::string> names = {"__base__"};
    for (const AdapterSpec& a : setup.adapters) names.push_back(a.name);
    for (const std::string& name : names) {
      for (size_t i = 0; i < prompts.size(); ++i) {
        std::vector<int32_t> blocks;
        ASSERT_TRUE((*kv)->Reserve(blocks, static_cast<int64_t>(prompts[i].size())));
        model::ForwardBatch b;
        b.token_ids = prompts[i];
        b.seqs.push_back({static_cast<int64_t>(prompts[i].size()), 0, &blocks, true});
        b.adapters.push_back(weights_of(name));
        auto logits = (*base)->Forward(b, **kv);
        ASSERT_TRUE(logits.ok());
        EXPECT_LE((logits->select(0, 0) - Read(**ref, absl::StrCat(name, ".r", i, ".last_logits")))
                      .abs().max().item<double>(), kTol) << name << " prompt " << i;
        (*kv)->Free(blocks);
      }
    }
    // One step holding every row of the mixed setup, adapters interleaved.
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
      at::Tensor row = logits->select(0, static_cast<int64_t>(i));
      EXPECT_LE((row - Read(**ref, absl::StrCat(setup.mixed[i], ".r", i, ".last_logits"))).abs().max().item<double>(), kTol)
          << "mixed row " << i << " vs its single-row result";
      EXPECT_LE((row - Read(**ref, absl::StrCat("mixed.r", i, ".last_logits"))).abs().max().item<double>(), kTol)
          << "mixed row " << i << " vs PEFT adapter_names";
    }
    for (auto& b : blocks) (*kv)->Free(b);

    // Every adapter (DoRA included, which PEFT cannot mix) and the base in one
    // step, against their single-row references.
    {
      std::vector<std::vector<int32_t>> bl(names.size());
      model::ForwardBatch all;
      for (size_t k = 0; k < names.size(); ++k) {
        const size_t i = k % prompts.size();
        ASSERT_TRUE((*kv)->Reserve(bl[k], static_cast<int64_t>(prompts[i].size())));
        all.token_ids.insert(all.token_ids.end(), prompts[i].begin(), prompts[i].end());
        all.seqs.push_back({static_cast<int64_t>(prompts[i].size()), 0, &bl[k], true});
        all.adapters.push_back(weights_of(names[k]));
      }
      auto l = (*base)->Forward(all, **kv);
      ASSERT_TRUE(l.ok());
      for (size_t k = 0; k < names.size(); ++k) {
        const size_t i = k % prompts.size();
        EXPECT_LE((l->select(0, static_cast<int64_t>(k)) -
                   Read(**ref, absl::StrCat(names[k], ".r", i, ".last_logits"))).abs().max().item<double>(), kTol)
            << "row " << k << " (" << names[k] << ") in a batch of every adapter";
      }
      for (auto& b : bl) (*kv)->Free(b);
    }

    // Mixed greedy generation through the engine equals PEFT's batched generate.
    auto engine_model = model::LlamaModel::Load(base_dir, options);
    ASSERT_TRUE(engine_model.ok());
    auto eng = engine::Engine::Create(*std::move(engine_model), {}, nullptr);
    ASSERT_TRUE(eng.ok()) << eng.status();
    using Sink = testing::CollectingSink;
    std::vector<std::shared_ptr<Sink>> sinks;
    for (size_t i = 0; i < prompts.size(); ++i) {
      engine::GenerationRequest r;
      r.prompt = prompts[i];
      r.sampling.max_new_tokens = kNewTokens;
      r.sampling.ignore_eos = true;
      // Adapters were validated against an identical copy of the base.
      if (setup.mixed[i] != "__base__") r.adapter = loaded.at(setup.mixed[i])->Lease();
      sinks.push_back(std::make_shared<Sink>());
      ASSERT_TRUE((*eng)->Submit(r, sinks.back()).ok());
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_TRUE(testing::Await(sinks[i]->done, "sinks[i]->done"));
      EXPECT_EQ(sinks[i]->tokens, ToVector(Read(**ref, absl::StrCat("mixed.r", i, ".greedy")))) << "row " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Peft, LoraConformanceTest,
    ::testing::Values(
        LoraSetup{"llama",
              {{"qv_r4", "--r 4 --alpha 8 --targets q_proj,v_proj"},
               {"all_r16_rslora", "--r 16 --alpha 32 --targets all-linear --rslora"},
               {"patterns", "--r 8 --alpha 16 --targets q_proj,k_proj,v_proj,o_proj --rank-pattern '{\"q_proj\": 2}' --alpha-pattern '{\"v_proj\": 3}'"},
               {"layer1_mlp", "--r 6 --alpha 12 --targets gate_proj,up_proj,down_proj --layers 1"},
               {"dora_r4", "--r 4 --alpha 8 --targets q_proj,v_proj,down_proj --dora", true},
               {"regex_r2", "--r 2 --alpha 4 --targets-regex '.*\\.0\\.self_attn\\.(q|k)_proj'"},
               // Saved in half precision: kept so on the fp32 base, widened as read.
               {"bf16_qkvo_r8", "--r 8 --alpha 16 --targets q_proj,k_proj,v_proj,o_proj --dtype bfloat16"},
               {"f16_dora_r4", "--r 4 --alpha 8 --targets q_proj,down_proj --dora --dtype float16", true}},
              {"qv_r4", "__base__", "all_r16_rslora", "bf16_qkvo_r8"}},
        LoraSetup{"qwen2",
              {{"qwen_all_r8", "--r 8 --alpha 16 --targets all-linear"},
               {"qwen_dora", "--r 4 --alpha 8 --targets q_proj,k_proj,v_proj --dora", true}},
              {"qwen_all_r8", "__base__", "qwen_all_r8", "__base__"}}),
    [](const ::testing::TestParamInfo<LoraSetup>& info) { return info.param.arch; });

}  // namespace
}  // namespace adapterd
