// LoadAdapter for every adapter kind on the demo base model, with adapters
// written here in C++: the table dispatches each format and peft_type to its
// loader (unsupported types keep their messages), each kind's summary is
// filled, and every tensor of IA3, bottleneck and prompt-tuning adapters
// holding a NaN or an infinity, in F32, F16 or BF16, is refused with the
// file, the tensor and the first bad index. LoRA's tensors are covered in
// lora_loader_test.cc.
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/llama_model.h"
#include "server/model/safetensors.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/demo_model.h"
#include "tests/support/status_assertions.h"

namespace adapterd::adapters {
namespace {

using json = nlohmann::json;
using model::StDType;
using ::testing::ElementsAre;
using testing::FakeAdapter;
using testing::FakeTensor;
using testing::IsError;
using testing::LoraKey;

constexpr int64_t kLayers = 4;
constexpr int64_t kHidden = 256;

// IA3 on k, v (outputs scaled, [out, 1]) and down (input scaled, [1, in]).
FakeAdapter Ia3() {
  FakeAdapter a;
  a.config = {{"peft_type", "IA3"},
              {"task_type", "CAUSAL_LM"},
              {"target_modules", {"k_proj", "v_proj", "down_proj"}},
              {"feedforward_modules", {"down_proj"}}};
  for (int64_t l = 0; l < kLayers; ++l) {
    a.Add(LoraKey(l, "self_attn.k_proj", "ia3_l"), {128, 1}, 10 + l, 1.0f);
    a.Add(LoraKey(l, "self_attn.v_proj", "ia3_l"), {128, 1}, 20 + l, 1.0f);
    a.Add(LoraKey(l, "mlp.down_proj", "ia3_l"), {1, 688}, 30 + l, 1.0f);
  }
  return a;
}

std::string BottleneckKey(int64_t layer, const char* location, const std::string& suffix) {
  return absl::StrCat("model.layers.", layer, ".", location, ".adapters.bn.", suffix);
}

// A Houlsby-style AdapterHub save that holds every kind of tensor: down and
// up projections with biases, both LayerNorms (the one before registered
// twice, as the library does) and per-channel scaling; width 256 / 16 = 16.
FakeAdapter Bottleneck() {
  FakeAdapter a;
  a.config = {{"config",
               {{"mh_adapter", true}, {"output_adapter", true}, {"reduction_factor", 16},
                {"non_linearity", "relu"}, {"ln_before", true}, {"ln_after", true}, {"scaling", "channel"},
                {"is_parallel", false}, {"use_gating", false}, {"leave_out", json::array()}}},
              {"hidden_size", kHidden},
              {"name", "bn"},
              {"model_class", "LlamaForCausalLM"}};
  const std::vector<std::pair<std::string, std::vector<int64_t>>> tensors = {
      {"adapter_norm_before.weight", {kHidden}}, {"adapter_norm_before.bias", {kHidden}},
      {"adapter_down.0.weight", {kHidden}},      {"adapter_down.0.bias", {kHidden}},
      {"adapter_down.1.weight", {16, kHidden}},  {"adapter_down.1.bias", {16}},
      {"adapter_up.weight", {kHidden, 16}},      {"adapter_up.bias", {kHidden}},
      {"adapter_norm_after.weight", {kHidden}},  {"adapter_norm_after.bias", {kHidden}},
      {"scaling", {kHidden}}};
  uint32_t seed = 40;
  for (int64_t l = 0; l < kLayers; ++l) {
    for (const char* location : {"attention_adapters", "output_adapters"}) {
      for (const auto& [suffix, shape] : tensors) a.Add(BottleneckKey(l, location, suffix), shape, seed++, 0.5f);
    }
  }
  return a;
}

FakeAdapter PromptTuning() {
  FakeAdapter a;
  a.config = {{"peft_type", "PROMPT_TUNING"},
              {"task_type", "CAUSAL_LM"},
              {"num_virtual_tokens", 5},
              {"token_dim", kHidden},
              {"num_transformer_submodules", 1}};
  a.Add("prompt_embeddings", {5, kHidden}, 50, 0.5f);
  return a;
}

// The upload of `a`; AdapterHub saves (a "config" object) carry adapter.safetensors.
std::map<std::string, std::string> Upload(const FakeAdapter& a) {
  const bool hub = a.config.contains("config");
  return {{kConfigFile, a.config.dump()}, {hub ? kAdapterHubWeightsFile : kWeightsFile, a.Weights()}};
}

class AdapterKindsLoaderTest : public testing::DemoModelTest {
 protected:
  static absl::StatusOr<LoadedAdapter> Load(const FakeAdapter& a) {
    absl::StatusOr<AdapterFiles> files = AdapterFilesFromUpload(Upload(a));
    if (!files.ok()) return files.status();
    return LoadAdapter(*files, *base_);
  }

  // Every tensor of `a`, converted to each float dtype, with a NaN, +Inf or
  // -Inf at index 1 (and a later one at 3): refused naming index 1.
  static void ExpectEveryNonFiniteRefused(const FakeAdapter& a) {
    const std::pair<float, const char*> values[] = {{std::nanf(""), "NaN"}, {INFINITY, "+Inf"}, {-INFINITY, "-Inf"}};
    const std::string file = a.config.contains("config") ? kAdapterHubWeightsFile : kWeightsFile;
    for (StDType dtype : {StDType::kF32, StDType::kF16, StDType::kBF16}) {
      FakeAdapter converted = a;
      for (FakeTensor& t : converted.tensors) testing::ConvertTensor(t, dtype);
      ASSERT_TRUE(Load(converted).ok()) << Load(converted).status();
      for (size_t i = 0; i < a.tensors.size(); ++i) {
        for (const auto& [value, word] : values) {
          SCOPED_TRACE(absl::StrCat(std::string(model::StDTypeName(dtype)), " ", a.tensors[i].name, " ", word));
          FakeAdapter bad = converted;
          testing::SetElement(bad.tensors[i], 3, value);
          testing::SetElement(bad.tensors[i], 1, value);
          EXPECT_TRUE(IsError(Load(bad).status(), absl::StatusCode::kInvalidArgument,
                              {absl::StrCat("upload:", file, ": tensor '", a.tensors[i].name, "' holds ", word,
                                            " at index 1")}));
        }
      }
    }
  }
};

TEST_F(AdapterKindsLoaderTest, EachKindLoadsThroughTheTableWithItsSummary) {
  absl::StatusOr<LoadedAdapter> lora = Load(testing::QvLora());
  ASSERT_TRUE(lora.ok()) << lora.status();
  EXPECT_EQ(lora->summary.type, "lora");
  EXPECT_THAT(lora->summary.ranks, ElementsAre(4));
  EXPECT_THAT(lora->summary.target_modules, ElementsAre("q_proj", "v_proj"));

  FakeAdapter untyped = testing::QvLora();  // PEFT configs without peft_type are LoRA
  untyped.config.erase("peft_type");
  ASSERT_TRUE(Load(untyped).ok()) << Load(untyped).status();

  absl::StatusOr<LoadedAdapter> ia3 = Load(Ia3());
  ASSERT_TRUE(ia3.ok()) << ia3.status();
  EXPECT_EQ(ia3->summary.type, "ia3");
  EXPECT_THAT(ia3->summary.target_modules, ElementsAre("down_proj", "k_proj", "v_proj"));
  EXPECT_THAT(ia3->summary.feedforward_modules, ElementsAre("down_proj"));

  absl::StatusOr<LoadedAdapter> bn = Load(Bottleneck());
  ASSERT_TRUE(bn.ok()) << bn.status();
  EXPECT_EQ(bn->summary.type, "bottleneck");
  EXPECT_THAT(bn->summary.bottleneck_widths, ElementsAre(16));
  EXPECT_THAT(bn->summary.locations, ElementsAre("mh_adapter", "output_adapter"));
  EXPECT_EQ(bn->summary.non_linearity, "relu");
  EXPECT_FALSE(bn->summary.parallel);

  absl::StatusOr<LoadedAdapter> pt = Load(PromptTuning());
  ASSERT_TRUE(pt.ok()) << pt.status();
  EXPECT_EQ(pt->summary.type, "prompt_tuning");
  EXPECT_EQ(pt->summary.num_virtual_tokens, 5);
  EXPECT_EQ(pt->weights->num_virtual_tokens(), 5);
}

TEST_F(AdapterKindsLoaderTest, UnsupportedTypesAndMismatchedFormatsKeepTheirMessages) {
  // A prompt-tuning save read as prefix tuning: its tensor is too narrow.
  FakeAdapter prefix = PromptTuning();
  prefix.config["peft_type"] = "PREFIX_TUNING";
  EXPECT_TRUE(IsError(Load(prefix).status(), absl::StatusCode::kFailedPrecondition, {"prompt_embeddings", "shape"}));
  FakeAdapter other = PromptTuning();
  other.config["peft_type"] = "LOHA";
  EXPECT_TRUE(IsError(Load(other).status(), absl::StatusCode::kInvalidArgument,
                      {"'peft_type' \"LOHA\" is not supported (LORA, ADALORA, IA3, PROMPT_TUNING, PREFIX_TUNING, ADAPTION_PROMPT)"}));
  other.config["peft_type"] = 3;
  EXPECT_TRUE(IsError(Load(other).status(), absl::StatusCode::kInvalidArgument, {"'peft_type' must be a string"}));

  // An AdapterHub config with PEFT's weights file, and PEFT's config with AdapterHub's.
  const FakeAdapter bn = Bottleneck();
  absl::StatusOr<AdapterFiles> files =
      AdapterFilesFromUpload({{kConfigFile, bn.config.dump()}, {kWeightsFile, bn.Weights()}});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_TRUE(IsError(LoadAdapter(*files, *base_).status(), absl::StatusCode::kInvalidArgument,
                      {"an AdapterHub config needs its weights in adapter.safetensors"}));
  const FakeAdapter ia3 = Ia3();
  files = AdapterFilesFromUpload({{kConfigFile, ia3.config.dump()}, {kAdapterHubWeightsFile, ia3.Weights()}});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_TRUE(IsError(LoadAdapter(*files, *base_).status(), absl::StatusCode::kInvalidArgument,
                      {"not an AdapterHub config (no 'config' object) next to adapter.safetensors"}));
}

TEST_F(AdapterKindsLoaderTest, Ia3RefusesNonFiniteVectors) { ExpectEveryNonFiniteRefused(Ia3()); }

TEST_F(AdapterKindsLoaderTest, BottleneckRefusesNonFiniteWeightsBiasesLayerNormsAndScaling) {
  // Layer 0 only: every kind of tensor once per location, not once per layer.
  FakeAdapter one = Bottleneck();
  one.config["config"]["leave_out"] = {1, 2, 3};
  std::erase_if(one.tensors, [](const FakeTensor& t) { return !t.name.starts_with("model.layers.0."); });
  ASSERT_EQ(one.tensors.size(), 22u);
  ExpectEveryNonFiniteRefused(one);
}

TEST_F(AdapterKindsLoaderTest, PromptTuningRefusesNonFiniteEmbeddings) { ExpectEveryNonFiniteRefused(PromptTuning()); }

// The layer-index parser the three per-layer loaders share.
TEST_F(AdapterKindsLoaderTest, LayerIndicesOutsideTheBaseOrNotPlainNumbersAreRefused) {
  for (const char* layer : {"4", "01", "123456789012345678901"}) {
    SCOPED_TRACE(layer);
    FakeAdapter ia3 = Ia3();
    ia3.tensors[0].name = absl::StrCat("base_model.model.model.layers.", layer, ".self_attn.k_proj.ia3_l");
    EXPECT_TRUE(IsError(Load(ia3).status(), absl::StatusCode::kFailedPrecondition,
                        {ia3.tensors[0].name, absl::StrCat("layer ", layer, " does not exist (the base has 4 layers)")}));
    FakeAdapter bn = Bottleneck();
    bn.tensors[0].name = BottleneckKey(0, "attention_adapters", "adapter_norm_before.weight");
    bn.tensors[0].name.replace(bn.tensors[0].name.find(".0."), 3, absl::StrCat(".", layer, "."));
    if (std::string(layer).size() > 9) continue;  // the AdapterHub key pattern takes at most 9 digits
    EXPECT_TRUE(IsError(Load(bn).status(), absl::StatusCode::kFailedPrecondition,
                        {bn.tensors[0].name, absl::StrCat("layer ", layer, " does not exist")}));
  }
}

}  // namespace
}  // namespace adapterd::adapters
