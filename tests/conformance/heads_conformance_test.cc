// Conformance of the adapters that bring more than low-rank deltas, computed
// live with PEFT on tiny Llama and Qwen2 checkpoints: SEQ_CLS classifiers
// with their own score heads (3 and 5 labels), modules_to_save on lm_head
// and embed_tokens, trainable tokens, LoRA on embed_tokens, trained biases
// (bias "all" and "lora_only" on Qwen2, whose q/k/v have biases; lora_bias
// on Llama, which has none) and AdaLoRA after PEFT's rank allocation pruned
// ranks. peft_reference.py makes each adapter with every tensor moved away
// from the base and runs it in PeftModel; adapterd loads the same files by
// path and by upload and must agree on classification logits within 1e-4,
// and on 32 greedy tokens and their log-probabilities. One step mixing the
// base, a classification row and adapters of every kind gives each row its
// single-row result. Unloading a full LM-head copy returns its bytes; bad
// files get a clear error and leave the registry as it was.
#include <ATen/ATen.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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
using ::testing::HasSubstr;
using testing::ToVector;

constexpr double kTol = 1e-4;
constexpr int kNewTokens = 32;
constexpr int64_t kPad = 250;  // cls3's pad_token_id; an ordinary token for the others

struct HeadsAdapter {
  std::string name;
  std::string args;  // peft_reference.py make-* command line after --model/--out/--seed
  bool classify = false;
  std::string type = "lora";  // AdapterInfo.type
  std::vector<std::string> labels = {};  // the id2label names it was made with
};

struct HeadsSetup {
  std::string arch;
  std::vector<HeadsAdapter> adapters;
};
void PrintTo(const HeadsSetup& s, std::ostream* os) { *os << s.arch; }

const char kCls3[] =
    "make-cls --labels 3 --label-names negative,neutral,positive --pad-token-id 250 --save-config --r 4 --alpha 8 "
    "--targets q_proj,v_proj";
const char kCls5[] = "make-cls --labels 5 --r 8 --alpha 16 --targets q_proj,k_proj,v_proj,o_proj";

std::vector<HeadsAdapter> LlamaAdapters() {
  return {
      {"cls3", kCls3, true, "lora", {"negative", "neutral", "positive"}},
      {"cls5", kCls5, true},
      {"head", "make-lora --r 4 --alpha 8 --targets q_proj,v_proj --modules-to-save lm_head"},
      {"embed", "make-lora --r 4 --alpha 8 --targets q_proj --modules-to-save embed_tokens"},
      {"tokens", "make-lora --r 4 --alpha 8 --targets v_proj --trainable-tokens 3,5,17,42,99,100,200,250,7"},
      {"emb_lora", "make-lora --r 4 --alpha 8 --targets embed_tokens,q_proj"},
      {"lora_bias", "make-lora --r 4 --alpha 8 --targets q_proj,o_proj,down_proj --lora-bias"},
      {"adalora", "make-adalora --init-r 6 --target-r 3 --alpha 12 --targets q_proj,v_proj,down_proj", false,
       "adalora"},
      {"adalora_masked",
       "make-adalora --init-r 6 --target-r 3 --alpha 12 --targets q_proj,k_proj,up_proj --keep-masked", false,
       "adalora"},
      {"plain", "make-lora --r 8 --alpha 16 --targets all-linear"},
      {"ia3", "make-ia3", false, "ia3"},
  };
}

std::vector<HeadsAdapter> QwenAdapters() {
  return {
      {"cls3", kCls3, true, "lora", {"negative", "neutral", "positive"}},
      {"cls5", kCls5, true},
      {"bias_all", "make-lora --r 4 --alpha 8 --targets q_proj,o_proj --bias all"},
      {"bias_lora_only", "make-lora --r 4 --alpha 8 --targets q_proj,v_proj --bias lora_only"},
      {"head", "make-lora --r 4 --alpha 8 --targets q_proj,v_proj --modules-to-save lm_head"},
      {"embed", "make-lora --r 4 --alpha 8 --targets k_proj --modules-to-save embed_tokens"},
      {"tokens", "make-lora --r 4 --alpha 8 --targets v_proj --trainable-tokens 3,5,17,42,99,100,200,250,7"},
      {"emb_lora", "make-lora --r 4 --alpha 8 --targets embed_tokens,v_proj"},
      {"adalora", "make-adalora --init-r 6 --target-r 3 --alpha 12 --targets q_proj,v_proj,down_proj", false,
       "adalora"},
      {"plain", "make-lora --r 8 --alpha 16 --targets all-linear"},
      {"ia3", "make-ia3", false, "ia3"},
  };
}

// The last one ends in cls3's pad token, which classification skips.
std::vector<std::vector<int64_t>> Prompts() {
  return {{5, 17, 99, 3}, {42}, {7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 200, 201}, {100, 3, 77, 21, 9},
          {11, 12, 13, kPad, kPad}};
}

at::Tensor Read(const model::SafetensorsFile& f, const std::string& name) { return testing::ReadReference(f, name); }

double MaxDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Adapters, base and reference outputs of one architecture, made once per
// test process.
struct Made {
  std::string dir, error;
  std::unique_ptr<model::SafetensorsFile> ref;
  int64_t vocab = 0, hidden = 0;
};

const Made& MakeOnce(const HeadsSetup& setup) {
  static auto* made = new std::map<std::string, std::unique_ptr<Made>>();
  std::unique_ptr<Made>& m = (*made)[setup.arch];
  if (m != nullptr) return *m;
  m = std::make_unique<Made>();
  m->dir = testing::MakeTempDir("heads-" + setup.arch);
  auto py = testing::ReferencePython();
  if (!py.ok()) return m->error = py.status().ToString(), *m;
  const std::string base = m->dir + "/base";
  auto made_base = testing::RunReference(absl::StrCat("make-model --arch ", setup.arch, " --seed 11 --out ", base));
  if (!made_base.ok()) return m->error = made_base.status().ToString(), *m;
  const std::string script = absl::StrCat(*py, " ", testing::SourceDir(), "/tests/conformance/peft_reference.py ");
  std::vector<std::string> list;
  int seed = 500;
  for (const HeadsAdapter& a : setup.adapters) {
    auto r = testing::RunCommand(
        absl::StrCat(script, a.args, " --model ", base, " --out ", m->dir, "/", a.name, " --seed ", seed++));
    if (!r.ok()) return m->error = absl::StrCat(a.name, ": ", r.status().ToString()), *m;
    list.push_back(absl::StrCat(a.name, "=", m->dir, "/", a.name));
  }
  testing::WritePrompts(m->dir + "/prompts.json", Prompts());
  auto r = testing::RunCommand(absl::StrCat(script, "reference --model ", base, " --adapters ",
                                            absl::StrJoin(list, ","), " --prompts ", m->dir, "/prompts.json --out ",
                                            m->dir, "/ref.safetensors --new-tokens ", kNewTokens));
  if (!r.ok()) return m->error = r.status().ToString(), *m;
  auto ref = model::SafetensorsFile::Open(m->dir + "/ref.safetensors");
  if (!ref.ok()) return m->error = ref.status().ToString(), *m;
  m->ref = *std::move(ref);
  const nlohmann::json cfg = nlohmann::json::parse(std::ifstream(base + "/config.json"));
  m->vocab = cfg["vocab_size"].get<int64_t>();
  m->hidden = cfg["hidden_size"].get<int64_t>();
  return *m;
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

// A copy of an adapter directory with its config edited and, through
// `edit_tensor`, any tensor replaced (return false to keep it as is).
struct OwnedTensor {
  std::string name;
  model::StDType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
std::string Variant(const std::string& src, const std::string& dst, const std::function<void(nlohmann::json&)>& edit,
                    const std::function<bool(OwnedTensor&)>& edit_tensor = nullptr) {
  fs::create_directories(dst);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(src + "/adapter_config.json"));
  edit(cfg);
  std::ofstream(dst + "/adapter_config.json") << cfg.dump();
  if (fs::exists(src + "/config.json")) fs::copy_file(src + "/config.json", dst + "/config.json");
  auto f = model::SafetensorsFile::Open(src + "/adapter_model.safetensors");
  EXPECT_TRUE(f.ok());
  std::vector<OwnedTensor> owned;
  for (const model::StTensorInfo& t : (*f)->tensors()) {
    auto d = (*f)->Data(t);
    owned.push_back({t.name, t.dtype, t.shape, std::string(reinterpret_cast<const char*>(d.data()), d.size())});
    if (edit_tensor) edit_tensor(owned.back());
  }
  std::vector<model::StTensorToWrite> out;
  for (const OwnedTensor& t : owned) out.push_back({t.name, t.dtype, t.shape, t.bytes});
  EXPECT_TRUE(model::WriteSafetensors(dst + "/adapter_model.safetensors", out).ok());
  return dst;
}

// `name{labels} value` from a Prometheus exposition, or -1.
double MetricValue(const std::string& exposition, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (line.size() > series.size() && line.substr(0, series.size()) == series && line[series.size()] == ' ') {
      return std::stod(std::string(line.substr(series.size() + 1)));
    }
  }
  return -1;
}

v1::ClassifyRequest ClassifyIds(const std::string& adapter, const std::vector<int64_t>& prompt) {
  v1::ClassifyRequest req;
  req.set_adapter_id(adapter);
  for (int64_t t : prompt) req.add_prompt_token_ids(static_cast<uint32_t>(t));
  return req;
}

// Checks one adapter's output for every prompt over gRPC against the reference.
void CheckOverGrpc(v1::Inference::Stub& inference, const model::SafetensorsFile& ref, const HeadsAdapter& a,
                   const std::string& id) {
  const auto prompts = Prompts();
  for (size_t i = 0; i < prompts.size(); ++i) {
    SCOPED_TRACE(absl::StrCat(id, " prompt ", i));
    const std::string key = absl::StrCat(a.name, ".r", i, ".");
    if (a.classify) {
      v1::ClassifyResponse resp;
      grpc::ClientContext ctx;
      grpc::Status st = inference.Classify(&ctx, ClassifyIds(id, prompts[i]), &resp);
      ASSERT_TRUE(st.ok()) << st.error_message();
      at::Tensor want = Read(ref, key + "cls_logits");
      ASSERT_EQ(resp.scores_size(), want.size(0));
      at::Tensor probs = want.softmax(-1);
      for (int l = 0; l < resp.scores_size(); ++l) {
        EXPECT_NEAR(resp.scores(l).logit(), want[l].item<double>(), kTol) << "label " << l;
        EXPECT_NEAR(resp.scores(l).probability(), probs[l].item<double>(), kTol) << "label " << l;
        EXPECT_EQ(resp.scores(l).label(), a.labels.empty() ? absl::StrCat(l) : a.labels[l]);
      }
      EXPECT_EQ(resp.prompt_tokens(), prompts[i].size());
      const bool padded = !a.labels.empty() && prompts[i].back() == kPad;  // cls3 skips its pad tokens
      EXPECT_EQ(resp.pooled_index(), padded ? 2u : prompts[i].size() - 1);
      continue;
    }
    v1::GenerateRequest req = testing::GreedyRequest(id, {}, kNewTokens);
    for (int64_t t : prompts[i]) req.add_prompt_token_ids(static_cast<uint32_t>(t));
    req.mutable_sampling()->set_return_logprobs(true);
    v1::GenerateResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = inference.Generate(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    std::vector<int64_t> want = ToVector(Read(ref, key + "greedy"));
    EXPECT_EQ(std::vector<int64_t>(resp.token_ids().begin(), resp.token_ids().end()), want);
    at::Tensor steps = Read(ref, key + "step_logits").log_softmax(-1);
    ASSERT_EQ(resp.logprobs_size(), kNewTokens);
    for (int s = 0; s < kNewTokens; ++s) {
      EXPECT_NEAR(resp.logprobs(s), steps[s][want[s]].item<double>(), kTol) << "step " << s;
    }
  }
}

// Prints a server's log if the test has failed by the end of the scope.
struct LogOnFailure {
  const testing::ServerProcess* server;
  ~LogOnFailure() {
    if (::testing::Test::HasFailure()) std::cerr << "server log:\n" << server->Log();
  }
};

class HeadsConformanceTest : public ::testing::TestWithParam<HeadsSetup> {
 protected:
  void SetUp() override {
    ADAPTERD_REQUIRE_REFERENCE();
    made_ = &MakeOnce(GetParam());
    ASSERT_TRUE(made_->error.empty()) << made_->error;
  }
  const model::SafetensorsFile& ref() const { return *made_->ref; }
  std::string Dir(const std::string& name) const { return made_->dir + "/" + name; }
  const Made* made_ = nullptr;
};

// Over gRPC: every adapter by path and by upload, against PEFT; what
// GetAdapter reports; Generate and Classify refusing each other's adapters.
TEST_P(HeadsConformanceTest, ServerMatchesPeft) {
  auto server = testing::ServerProcess::Start({"--model=" + Dir("base")});
  ASSERT_TRUE(server.ok()) << server.status();
  const LogOnFailure log{server->get()};
  auto channel = testing::Connect((*server)->grpc_address());
  auto admin = v1::Admin::NewStub(channel);
  auto inference = v1::Inference::NewStub(channel);
  const int64_t full_copy = made_->vocab * made_->hidden * 4;
  for (const HeadsAdapter& a : GetParam().adapters) {
    SCOPED_TRACE(a.name);
    v1::AdapterInfo by_path, by_upload;
    grpc::Status st = testing::LoadAdapterByPath(*admin, a.name, Dir(a.name), &by_path);
    ASSERT_TRUE(st.ok()) << st.error_message();
    st = testing::UploadAdapterDir(*admin, a.name + "-up", Dir(a.name), &by_upload);
    ASSERT_TRUE(st.ok()) << "upload: " << st.error_message();
    EXPECT_EQ(by_path.type(), a.type);
    EXPECT_EQ(by_path.bytes(), by_upload.bytes());
    EXPECT_EQ(by_path.labels_size(), by_upload.labels_size());
    if (a.type != "ia3") {
      EXPECT_EQ(by_path.task_type(), a.classify ? "SEQ_CLS" : "CAUSAL_LM");
    }
    if (a.classify) {
      EXPECT_THAT(by_path.modules_to_save(), ::testing::Contains("score"));
      EXPECT_EQ(by_path.labels_size(), Read(ref(), a.name + ".r0.cls_logits").size(0));
    }
    if (a.name == "head" || a.name == "embed") {  // a full [vocab, hidden] copy, counted in its bytes
      EXPECT_THAT(by_path.modules_to_save(), ::testing::ElementsAre(a.name == "head" ? "lm_head" : "embed_tokens"));
      EXPECT_GT(static_cast<int64_t>(by_path.bytes()), full_copy);
    }
    if (a.name == "tokens") {
      EXPECT_EQ(by_path.trainable_tokens(), 9u);
    }
    if (a.name == "emb_lora") {
      EXPECT_THAT(by_path.target_modules(), ::testing::Contains("embed_tokens"));
    }
    if (a.name.starts_with("bias_")) {
      EXPECT_EQ(by_path.bias(), a.name.substr(5));
    }
    if (a.name == "lora_bias") {
      EXPECT_TRUE(by_path.lora_bias());
    }
    if (a.type == "adalora") {  // the ranks left after pruning, as PEFT counts them
      EXPECT_EQ(std::vector<int64_t>(by_path.ranks().begin(), by_path.ranks().end()),
                ToVector(Read(ref(), a.name + ".ranks")));
    }
    if (!a.classify) {  // the adapter changes the output
      EXPECT_GT(MaxDiff(Read(ref(), a.name + ".r0.last_logits"), Read(ref(), "__base__.r0.last_logits")), 1e-2);
    }
    CheckOverGrpc(*inference, ref(), a, a.name);
    CheckOverGrpc(*inference, ref(), a, a.name + "-up");
  }
  // Each RPC refuses the other's adapters, saying which is which.
  {
    v1::GenerateRequest req = testing::GreedyRequest("cls3", {1, 2, 3}, 4);
    v1::GenerateResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = inference->Generate(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(st.error_message(), HasSubstr("'cls3' is a sequence-classification adapter"));
  }
  for (const std::string& id : {std::string("plain"), std::string("")}) {
    v1::ClassifyResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = inference->Classify(&ctx, ClassifyIds(id, {1, 2, 3}), &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << id;
    EXPECT_THAT(st.error_message(), HasSubstr(id.empty() ? "base model" : "'plain' is a causal-LM adapter"));
  }
  EXPECT_EQ((*server)->Stop(SIGTERM), 0);
}

// Unloading an adapter that holds a full copy of the LM head returns its
// bytes to the device tier, as the metrics report.
TEST_P(HeadsConformanceTest, UnloadingAHeadReturnsItsBytes) {
  auto server = testing::ServerProcess::Start({"--model=" + Dir("base")});
  ASSERT_TRUE(server.ok()) << server.status();
  const LogOnFailure log{server->get()};
  auto admin = v1::Admin::NewStub(testing::Connect((*server)->grpc_address()));
  const std::string device = "adapterd_adapter_tier_bytes{tier=\"device\"}";
  auto read = [&](const std::string& series) {
    absl::StatusOr<std::string> m = testing::HttpGet((*server)->metrics_address(), "/metrics");
    return m.ok() ? MetricValue(*m, series) : -1.0;
  };
  const double device_before = read(device), live_before = read("adapterd_adapter_bytes");
  ASSERT_GE(device_before, 0);
  v1::AdapterInfo info;
  grpc::Status st = testing::UploadAdapterDir(*admin, "head-mem", Dir("head"), &info);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_GT(static_cast<int64_t>(info.bytes()), made_->vocab * made_->hidden * 4);
  EXPECT_TRUE(testing::PollUntil([&] { return read(device) == device_before + info.bytes(); },
                                 "the device tier to hold the adapter's bytes"));
  EXPECT_TRUE(testing::PollUntil([&] { return read("adapterd_adapter_bytes") == live_before + info.bytes(); },
                                 "adapterd_adapter_bytes to count them"));
  ASSERT_TRUE(testing::Unload(*admin, "head-mem").ok());
  EXPECT_TRUE(testing::PollUntil([&] { return read(device) == device_before; }, "the device tier to free them"));
  EXPECT_TRUE(testing::PollUntil([&] { return read("adapterd_adapter_bytes") == live_before; },
                                 "adapterd_adapter_bytes to drop them"));
  EXPECT_EQ((*server)->Stop(SIGTERM), 0);
}

// Bad files: the right code, a message naming the key or tensor, and the
// registry as it was.
TEST_P(HeadsConformanceTest, BadHeadsAreRefusedByName) {
  auto server = testing::ServerProcess::Start({"--model=" + Dir("base")});
  ASSERT_TRUE(server.ok()) << server.status();
  const LogOnFailure log{server->get()};
  auto admin = v1::Admin::NewStub(testing::Connect((*server)->grpc_address()));
  v1::AdapterInfo info;
  ASSERT_TRUE(testing::LoadAdapterByPath(*admin, "cls3", Dir("cls3"), &info).ok());
  const std::vector<std::string> before = ListIds(*admin);
  const int64_t hidden = made_->hidden;
  struct Bad {
    std::string what, dir;
    grpc::StatusCode code;
    std::vector<std::string> words;
  };
  const std::vector<Bad> bad = {
      {"head wider than the hidden size",
       Variant(Dir("cls3"), Dir("bad-head"), [](nlohmann::json&) {},
               [&](OwnedTensor& t) {
                 if (t.name != "base_model.model.score.weight") return false;
                 t.shape = {3, hidden + 1};
                 t.bytes.assign(static_cast<size_t>(3 * (hidden + 1) * 4), '\0');
                 return true;
               }),
       grpc::StatusCode::FAILED_PRECONDITION,
       {"base_model.model.score.weight", absl::StrCat("[3, ", hidden + 1, "]"), absl::StrCat("expected [3, ", hidden, "]")}},
      {"modules_to_save names a module the base lacks",
       Variant(Dir("head"), Dir("bad-mts"), [](nlohmann::json& c) { c["modules_to_save"] = {"lm_head", "value_head"}; }),
       grpc::StatusCode::FAILED_PRECONDITION, {"'modules_to_save'", "value_head", "does not have"}},
      {"trainable token beyond the vocabulary",
       Variant(Dir("tokens"), Dir("bad-tokens"),
               [&](nlohmann::json& c) { c["trainable_token_indices"] = {3, 5, 17, 42, 99, 100, 200, 250, made_->vocab}; }),
       grpc::StatusCode::FAILED_PRECONDITION,
       {"'trainable_token_indices[embed_tokens]'", absl::StrCat(made_->vocab), "vocabulary"}},
      {"id2label with the wrong count",
       Variant(Dir("cls3"), Dir("bad-labels"), [](nlohmann::json& c) { c["id2label"] = {{"0", "a"}, {"1", "b"}}; }),
       grpc::StatusCode::FAILED_PRECONDITION, {"'id2label'", "2 labels", "3"}},
      {"LoRA on lm_head",
       Variant(Dir("plain"), Dir("bad-lm-lora"), [](nlohmann::json& c) { c["target_modules"] = {"q_proj", "lm_head"}; }),
       grpc::StatusCode::INVALID_ARGUMENT, {"lm_head", "not supported"}},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    grpc::Status st = testing::LoadAdapterByPath(*admin, "bad", b.dir, &info);
    EXPECT_EQ(st.error_code(), b.code) << st.error_message();
    for (const std::string& w : b.words) EXPECT_THAT(st.error_message(), HasSubstr(w));
    EXPECT_EQ(ListIds(*admin), before);
  }
  EXPECT_EQ((*server)->Stop(SIGTERM), 0);
}

// Collects a classification request's scores, or a generation's tokens.
class ScoresSink : public testing::CollectingSink {
 public:
  void OnScores(std::span<const float> s) override { scores.assign(s.begin(), s.end()); }
  std::vector<float> scores;
};

// In process: each (adapter, prompt) alone against PEFT, then one step that
// holds the base, classification rows and adapters of every kind, and the
// same mix through the engine, classification rows joining generation steps.
TEST_P(HeadsConformanceTest, MixedStepRowsEqualSingleRows) {
  auto base = model::LlamaModel::Load(Dir("base"), {});
  ASSERT_TRUE(base.ok()) << base.status();
  adapters::AdapterRegistry registry(base->get());
  std::map<std::string, std::shared_ptr<const adapters::Adapter>> loaded;
  std::map<std::string, bool> classify = {{"__base__", false}};
  for (const HeadsAdapter& a : GetParam().adapters) {
    absl::Notification done;
    ASSERT_TRUE(registry.StartLoad(a.name, adapters::PathSource{Dir(a.name)}, false,
                                   [&](absl::StatusOr<adapters::AdapterInfo> r) {
                                     EXPECT_TRUE(r.ok()) << a.name << ": " << r.status();
                                     done.Notify();
                                   }).ok());
    ASSERT_TRUE(testing::Await(done, "the load of " + a.name));
    loaded[a.name] = *registry.Lookup(a.name);
    classify[a.name] = a.classify;
  }
  auto weights_of = [&](const std::string& name) -> const model::AdapterWeights* {
    return name == "__base__" ? nullptr : &testing::ResidentWeights(*loaded.at(name));
  };
  auto kv = model::KvCache::Create((*base)->config(), 16, 32 << 20, at::kFloat, at::kCPU);
  ASSERT_TRUE(kv.ok());
  const auto prompts = Prompts();
  // The output of rows (name, prompt) run together in one step.
  using Row = std::pair<std::string, size_t>;
  auto run = [&](const std::vector<Row>& rows) -> std::vector<at::Tensor> {
    std::vector<std::vector<int32_t>> blocks(rows.size());
    model::ForwardBatch b;
    for (size_t k = 0; k < rows.size(); ++k) {
      const std::vector<int64_t>& p = prompts[rows[k].second];
      EXPECT_TRUE((*kv)->Reserve(blocks[k], static_cast<int64_t>(p.size())));
      b.token_ids.insert(b.token_ids.end(), p.begin(), p.end());
      b.seqs.push_back({static_cast<int64_t>(p.size()), 0, &blocks[k], true, classify.at(rows[k].first)});
      b.adapters.push_back(weights_of(rows[k].first));
    }
    absl::StatusOr<model::ForwardOutput> out = (*base)->Run(b, **kv);
    for (auto& bl : blocks) (*kv)->Free(bl);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    std::vector<at::Tensor> per_row;
    int64_t logit = 0, score = 0;
    for (const Row& r : rows) {
      per_row.push_back(classify.at(r.first) ? out->scores[score++] : out->logits[logit++]);
    }
    return per_row;
  };
  auto want = [&](const Row& r) {
    return Read(ref(), absl::StrCat(r.first, ".r", r.second, classify.at(r.first) ? ".cls_logits" : ".last_logits"));
  };
  std::map<Row, at::Tensor> single;
  for (const auto& [name, unused] : classify) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (name == "cls3" && prompts[i].back() == kPad) continue;  // pooling is the core's: see Classify
      std::vector<at::Tensor> out = run({{name, i}});
      ASSERT_EQ(out.size(), 1u);
      single[{name, i}] = out[0];
      EXPECT_LE(MaxDiff(out[0], want({name, i})), kTol) << name << " prompt " << i << " alone";
    }
  }
  // One step: the base, both classifiers, and every other adapter, interleaved.
  std::vector<Row> mix;
  size_t k = 0;
  for (const char* name : {"__base__", "cls3", "head", "embed", "plain", "ia3", "tokens", "emb_lora",
                                  "cls5", "lora_bias", "bias_all", "bias_lora_only", "adalora", "adalora_masked",
                                  "head", "cls3"}) {
    if (!classify.contains(name)) continue;
    mix.push_back({name, k++ % 4});
  }
  std::vector<at::Tensor> mixed = run(mix);
  ASSERT_EQ(mixed.size(), mix.size());
  for (size_t r = 0; r < mix.size(); ++r) {
    EXPECT_LE(MaxDiff(mixed[r], single.at(mix[r])), kTol) << "row " << r << " (" << mix[r].first << ") vs alone";
    EXPECT_LE(MaxDiff(mixed[r], want(mix[r])), kTol) << "row " << r << " (" << mix[r].first << ") vs PEFT";
  }

  // Through the engine: generation rows first, then classification rows
  // that join their decode steps; every request gets PEFT's answer.
  auto engine_model = model::LlamaModel::Load(Dir("base"), {});
  ASSERT_TRUE(engine_model.ok());
  auto eng = engine::Engine::Create(*std::move(engine_model), {}, nullptr);
  ASSERT_TRUE(eng.ok());
  std::vector<Row> order;
  for (const Row& r : mix) {
    if (!classify.at(r.first)) order.push_back(r);
  }
  for (const Row& r : mix) {
    if (classify.at(r.first)) order.push_back(r);
  }
  std::vector<std::shared_ptr<ScoresSink>> sinks;
  for (const Row& r : order) {
    engine::GenerationRequest req;
    req.kind = classify.at(r.first) ? engine::RequestKind::kClassify : engine::RequestKind::kGenerate;
    req.prompt = prompts[r.second];
    req.sampling.max_new_tokens = kNewTokens;
    req.sampling.ignore_eos = true;
    if (r.first != "__base__") req.adapter = loaded.at(r.first)->Lease();
    sinks.push_back(std::make_shared<ScoresSink>());
    ASSERT_TRUE((*eng)->Submit(req, sinks.back()).ok());
  }
  for (size_t i = 0; i < order.size(); ++i) {
    const Row& r = order[i];
    ASSERT_TRUE(testing::Await(sinks[i]->done, "request " + r.first));
    EXPECT_TRUE(sinks[i]->finish.status.ok()) << sinks[i]->finish.status;
    if (classify.at(r.first)) {
      at::Tensor got = at::tensor(at::ArrayRef<float>(sinks[i]->scores));
      EXPECT_LE(MaxDiff(got, want(r)), kTol) << r.first << " through the engine";
      EXPECT_TRUE(sinks[i]->tokens.empty());
    } else {
      EXPECT_EQ(sinks[i]->tokens, ToVector(Read(ref(), absl::StrCat(r.first, ".r", r.second, ".greedy"))))
          << r.first << " through the engine";
    }
  }
  // A classification row is prefill-only and may finish before the last
  // one is submitted, so the peak need not reach order.size(); but the
  // generation rows run for kNewTokens steps, so with them all running at
  // least one classification row must have joined their step.
  int64_t generation_rows = 0;
  for (const Row& r : order) generation_rows += classify.at(r.first) ? 0 : 1;
  EXPECT_GT((*eng)->GetStats().peak_running, generation_rows)
      << "no classification row shared a step with the generation rows";
}

INSTANTIATE_TEST_SUITE_P(Peft, HeadsConformanceTest,
                         ::testing::Values(HeadsSetup{"llama", LlamaAdapters()}, HeadsSetup{"qwen2", QwenAdapters()}),
                         [](const ::testing::TestParamInfo<HeadsSetup>& info) { return info.param.arch; });

}  // namespace
}  // namespace adapterd
