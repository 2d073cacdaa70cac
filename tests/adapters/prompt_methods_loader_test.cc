// LoadAdapter for PEFT PREFIX_TUNING and ADAPTION_PROMPT (LLaMA-Adapter)
// saves written here in C++, on the demo base (4 layers, hidden 256, 8
// heads, 4 key/value heads of 32): the layouts the loaders build, the
// summaries, and every malformed config or tensor refused with a message
// naming the key or tensor. Conformance with PEFT itself is in
// tests/conformance/prompt_methods_conformance_test.cc.
#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/demo_model.h"
#include "tests/support/status_assertions.h"

namespace adapterd::adapters {
namespace {

using testing::FakeAdapter;

constexpr int64_t kLayers = 4, kHidden = 256, kKvHeads = 4, kHeadDim = 32, kHeads = 8;

FakeAdapter Prefix(int64_t v = 6) {
  FakeAdapter a;
  a.config = {{"peft_type", "PREFIX_TUNING"}, {"task_type", "CAUSAL_LM"}, {"num_virtual_tokens", v},
              {"num_layers", kLayers},        {"token_dim", kKvHeads * kHeadDim}, {"num_transformer_submodules", 1},
              {"prefix_projection", false}};
  a.Add("prompt_embeddings", {v, kLayers * 2 * kKvHeads * kHeadDim}, 70, 0.5f);
  return a;
}

std::string AdaptionKey(int64_t layer, const char* what) {
  return absl::StrCat("base_model.model.model.layers.", layer, ".self_attn.", what);
}

FakeAdapter Adaption(int64_t len = 3, int64_t layers = 2) {
  FakeAdapter a;
  a.config = {{"peft_type", "ADAPTION_PROMPT"}, {"task_type", "CAUSAL_LM"}, {"adapter_len", len},
              {"adapter_layers", layers},       {"target_modules", "self_attn"}};
  for (int64_t l = kLayers - layers; l < kLayers; ++l) {
    a.Add(AdaptionKey(l, "adaption_prompt"), {1, len, kHidden}, 80 + static_cast<uint32_t>(l), 1.0f);
    a.Add(AdaptionKey(l, "adaption_gate"), {1}, 90 + static_cast<uint32_t>(l), 1.0f);
  }
  return a;
}

float F32At(const testing::FakeTensor& t, int64_t i) {
  float f;
  std::memcpy(&f, t.bytes.data() + 4 * i, 4);
  return f;
}

// A save the loader must refuse, with the status code and the words its message names.
struct BadCase {
  const char* what;
  FakeAdapter a;
  absl::StatusCode code;
  std::vector<std::string> words;
};

class PromptMethodsLoaderTest : public testing::DemoModelTest {
 protected:
  static absl::StatusOr<LoadedAdapter> Load(const FakeAdapter& a) {
    absl::StatusOr<AdapterFiles> files =
        AdapterFilesFromUpload({{kConfigFile, a.config.dump()}, {kWeightsFile, a.Weights()}});
    if (!files.ok()) return files.status();
    return LoadAdapter(*files, *base_);
  }

  static void ExpectAllRefused(const std::vector<BadCase>& cases) {
    for (const BadCase& c : cases) {
      SCOPED_TRACE(c.what);
      const absl::Status st = Load(c.a).status();
      EXPECT_EQ(st.code(), c.code) << st;
      for (const std::string& w : c.words) EXPECT_THAT(std::string(st.message()), ::testing::HasSubstr(w));
    }
  }
};

TEST_F(PromptMethodsLoaderTest, PrefixTuningKeepsPeftsPerLayerKeysAndValues) {
  const FakeAdapter a = Prefix();
  absl::StatusOr<LoadedAdapter> got = Load(a);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->summary.type, "prefix_tuning");
  EXPECT_EQ(got->summary.num_virtual_tokens, 6);
  const model::AdapterWeights& w = *got->weights;
  EXPECT_EQ(w.kind(), model::AdapterKind::kPrefixTuning);
  EXPECT_EQ(w.num_prefix_tokens(), 6);
  EXPECT_EQ(w.num_virtual_tokens(), 6);
  EXPECT_FALSE(w.prompt().defined());
  ASSERT_EQ(w.prefix_kv().sizes(), at::IntArrayRef({kLayers, 2, 6, kKvHeads, kHeadDim}));
  EXPECT_EQ(w.bytes(), 6 * kLayers * 2 * kKvHeads * kHeadDim * 4);
  // PEFT's flat index ((layer * 2 + kv) * heads + head) * head_dim + d, per virtual token.
  const int64_t width = kLayers * 2 * kKvHeads * kHeadDim;
  for (auto [v, l, kv, h, d] : {std::array<int64_t, 5>{0, 0, 0, 0, 0}, {5, 3, 1, 3, 31}, {2, 1, 0, 2, 7},
                                {4, 2, 1, 0, 16}}) {
    const float want = F32At(a.tensors[0], v * width + ((l * 2 + kv) * kKvHeads + h) * kHeadDim + d);
    EXPECT_EQ(w.prefix_kv()[l][kv][v][h][d].item<float>(), want) << v << " " << l << " " << kv << " " << h << " " << d;
  }
}

TEST_F(PromptMethodsLoaderTest, PrefixTuningRefusesWhatDoesNotFitTheBase) {
  std::vector<BadCase> cases;
  {
    FakeAdapter a = Prefix();
    a.config["num_layers"] = 3;
    cases.push_back({"num_layers", a, absl::StatusCode::kFailedPrecondition, {"'num_layers' is 3", "4 layers"}});
  }
  {
    FakeAdapter a = Prefix();
    a.config["num_virtual_tokens"] = 0;
    cases.push_back({"zero tokens", a, absl::StatusCode::kInvalidArgument, {"'num_virtual_tokens'"}});
  }
  {
    FakeAdapter a = Prefix();
    a.config["num_virtual_tokens"] = 7;  // the tensor holds 6
    cases.push_back({"tokens vs tensor", a, absl::StatusCode::kFailedPrecondition, {"prompt_embeddings", "shape"}});
  }
  {
    FakeAdapter a = Prefix();
    a.config["modules_to_save"] = {"lm_head"};
    cases.push_back({"modules_to_save", a, absl::StatusCode::kInvalidArgument, {"'modules_to_save'"}});
  }
  {
    FakeAdapter a = Prefix();
    a.config["num_transformer_submodules"] = 2;
    cases.push_back({"submodules", a, absl::StatusCode::kInvalidArgument, {"'num_transformer_submodules' is 2"}});
  }
  {
    FakeAdapter a = Prefix();
    a.Add("extra", {2}, 1);
    cases.push_back({"extra tensor", a, absl::StatusCode::kInvalidArgument, {"unexpected tensor 'extra'", "prefix tuning"}});
  }
  {
    FakeAdapter a = Prefix();
    testing::SetElement(a.tensors[0], 9, NAN);
    cases.push_back({"NaN", a, absl::StatusCode::kInvalidArgument, {"prompt_embeddings", "NaN at index 9"}});
  }
  ExpectAllRefused(cases);
}

TEST_F(PromptMethodsLoaderTest, LlamaAdapterProjectsItsPromptThroughTheBaseOnce) {
  const FakeAdapter a = Adaption();
  absl::StatusOr<LoadedAdapter> got = Load(a);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->summary.type, "adaption_prompt");
  EXPECT_EQ(got->summary.adapter_len, 3);
  EXPECT_EQ(got->summary.adapter_layers, 2);
  const model::AdapterWeights& w = *got->weights;
  EXPECT_EQ(w.num_virtual_tokens(), 0);
  EXPECT_EQ(w.FindAdaptionPrompt(0), nullptr);  // only the top adapter_layers
  EXPECT_EQ(w.FindAdaptionPrompt(1), nullptr);
  for (int64_t l : {2, 3}) {
    const model::AdaptionPromptModule* m = w.FindAdaptionPrompt(l);
    ASSERT_NE(m, nullptr) << l;
    ASSERT_EQ(m->k_t.sizes(), at::IntArrayRef({kHeads, kHeadDim, 3}));
    ASSERT_EQ(m->v.sizes(), at::IntArrayRef({kHeads, 3, kHeadDim}));
    // k = k_proj(prompt) per KV head, each repeated for its two query heads.
    at::Tensor prompt = at::from_blob(const_cast<char*>(a.tensors[2 * (l - 2)].bytes.data()), {3, kHidden}).clone();
    at::Tensor k = at::linear(prompt, base_->ProjWeight(l, model::Proj::kK)).view({3, kKvHeads, kHeadDim});
    at::Tensor v = at::linear(prompt, base_->ProjWeight(l, model::Proj::kV)).view({3, kKvHeads, kHeadDim});
    for (int64_t h = 0; h < kHeads; ++h) {
      EXPECT_TRUE(at::allclose(m->k_t[h].t(), k.select(1, h / 2), 1e-6, 1e-6)) << "layer " << l << " head " << h;
      EXPECT_TRUE(at::allclose(m->v[h], v.select(1, h / 2), 1e-6, 1e-6)) << "layer " << l << " head " << h;
    }
    EXPECT_EQ(m->gate.item<float>(), F32At(a.tensors[2 * (l - 2) + 1], 0));
  }
}

TEST_F(PromptMethodsLoaderTest, LlamaAdapterRefusesMalformedSaves) {
  std::vector<BadCase> cases;
  {
    FakeAdapter a = Adaption();
    a.config["adapter_layers"] = 5;
    cases.push_back({"too many layers", a, absl::StatusCode::kFailedPrecondition, {"'adapter_layers' is 5", "4 layers"}});
  }
  {
    FakeAdapter a = Adaption();
    a.config.erase("adapter_len");
    cases.push_back({"no adapter_len", a, absl::StatusCode::kInvalidArgument, {"'adapter_len' must be a positive integer"}});
  }
  {
    FakeAdapter a = Adaption();
    a.config["target_modules"] = "attn";
    cases.push_back({"target_modules", a, absl::StatusCode::kInvalidArgument, {"'target_modules'", "self_attn"}});
  }
  {
    FakeAdapter a = Adaption();
    a.Remove(AdaptionKey(3, "adaption_gate"));
    cases.push_back({"missing gate", a, absl::StatusCode::kInvalidArgument,
                     {"missing tensor", AdaptionKey(3, "adaption_gate")}});
  }
  {
    FakeAdapter a = Adaption(3, 1);  // layer 3 only
    a.Add(AdaptionKey(1, "adaption_gate"), {1}, 5, 1.0f);
    cases.push_back({"layer below the top ones", a, absl::StatusCode::kFailedPrecondition,
                     {AdaptionKey(1, "adaption_gate"), "not among the last 'adapter_layers'"}});
  }
  {
    FakeAdapter a = Adaption();
    a.config["adapter_len"] = 4;  // the tensors hold 3
    cases.push_back({"prompt shape", a, absl::StatusCode::kFailedPrecondition, {"adaption_prompt", "shape"}});
  }
  {
    FakeAdapter a = Adaption();
    a.Add("base_model.model.model.layers.3.mlp.up_proj.lora_A.weight", {4, kHidden}, 3);
    cases.push_back({"foreign tensor", a, absl::StatusCode::kInvalidArgument, {"unexpected tensor", "up_proj"}});
  }
  {
    FakeAdapter a = Adaption();
    testing::SetElement(a.tensors[1], 0, INFINITY);
    cases.push_back({"infinite gate", a, absl::StatusCode::kInvalidArgument, {"adaption_gate", "+Inf at index 0"}});
  }
  ExpectAllRefused(cases);
}

}  // namespace
}  // namespace adapterd::adapters
