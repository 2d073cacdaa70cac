// LoraConfig::FromJson and the PEFT targeting rules: which modules a config
// puts LoRA on, their ranks and alphas after rank_pattern / alpha_pattern
// (and AdaLoRA's), the keys of heads, trainable tokens and biases, and
// rejection (by key) of the PEFT features adapterd does not implement.
#include "adapters/lora_config.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/status_assertions.h"

namespace adapterd::adapters {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using testing::IsError;

constexpr char kLabel[] = "some/dir/adapter_config.json";

const char* const kProjs[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                              "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                              "mlp.down_proj"};

std::string Module(int64_t layer, const std::string& path) {
  return "model.layers." + std::to_string(layer) + "." + path;
}

// A config as PEFT 0.21 writes it (save_pretrained of a LoraConfig), with the
// many keys that do not change the math.
json PeftConfig() {
  return json::parse(R"({
    "alora_invocation_tokens": null,
    "alpha_pattern": {},
    "arrow_config": null,
    "auto_mapping": null,
    "base_model_name_or_path": "/tmp/tiny-llama",
    "bias": "none",
    "corda_config": null,
    "ensure_weight_tying": false,
    "eva_config": null,
    "exclude_modules": null,
    "fan_in_fan_out": false,
    "inference_mode": true,
    "init_lora_weights": true,
    "layer_replication": null,
    "layers_pattern": null,
    "layers_to_transform": null,
    "loftq_config": {},
    "lora_alpha": 16,
    "lora_bias": false,
    "lora_dropout": 0.05,
    "megatron_config": null,
    "megatron_core": "megatron.core",
    "modules_to_save": null,
    "peft_type": "LORA",
    "peft_version": "0.21.0",
    "qalora_group_size": 16,
    "r": 8,
    "rank_pattern": {},
    "revision": null,
    "target_modules": ["v_proj", "q_proj"],
    "target_parameters": null,
    "task_type": "CAUSAL_LM",
    "trainable_token_indices": null,
    "use_dora": false,
    "use_qalora": false,
    "use_rslora": false
  })");
}

absl::StatusOr<LoraConfig> Parse(const json& j) { return LoraConfig::FromJson(j.dump(), kLabel); }

// Parses PeftConfig() with `edits` applied (a null value erases the key).
absl::StatusOr<LoraConfig> ParseWith(std::initializer_list<std::pair<const char*, json>> edits) {
  json j = PeftConfig();
  for (const auto& [key, value] : edits) {
    if (value.is_discarded()) {
      j.erase(key);
    } else {
      j[key] = value;
    }
  }
  return Parse(j);
}

json Erase() { return json(json::value_t::discarded); }

// The set of (layer, projection path) the config targets on a 4-layer model.
std::vector<std::string> TargetedModules(const LoraConfig& c, int64_t layers = 4) {
  std::vector<std::string> out;
  for (int64_t l = 0; l < layers; ++l) {
    for (const char* p : kProjs) {
      if (c.Targets(Module(l, p), l)) out.push_back(Module(l, p));
    }
  }
  return out;
}

// ------------------------------------------------------------- parsing -----

TEST(LoraConfigTest, ParsesPeftSavedConfig) {
  absl::StatusOr<LoraConfig> c = Parse(PeftConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->r, 8);
  EXPECT_DOUBLE_EQ(c->lora_alpha, 16);
  EXPECT_FALSE(c->use_rslora);
  EXPECT_FALSE(c->use_dora);
  EXPECT_FALSE(c->fan_in_fan_out);
  EXPECT_THAT(c->target_modules, ElementsAre("v_proj", "q_proj"));
  EXPECT_FALSE(c->target_regex.has_value());
  EXPECT_FALSE(c->all_linear);
  EXPECT_THAT(c->exclude_modules, IsEmpty());
  EXPECT_FALSE(c->exclude_regex.has_value());
  EXPECT_THAT(c->layers_to_transform, IsEmpty());
  EXPECT_THAT(c->rank_pattern, IsEmpty());
  EXPECT_THAT(c->alpha_pattern, IsEmpty());
  const std::string q = Module(0, "self_attn.q_proj");
  EXPECT_EQ(c->RankFor(q), 8);
  EXPECT_DOUBLE_EQ(c->AlphaFor(q), 16);
  EXPECT_DOUBLE_EQ(c->ScaleFor(q), 2.0);
}

TEST(LoraConfigTest, ParsesRankAndAlpha) {
  absl::StatusOr<LoraConfig> c = ParseWith({{"r", 16}, {"lora_alpha", 8}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->r, 16);
  EXPECT_DOUBLE_EQ(c->lora_alpha, 8);
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(3, "self_attn.v_proj")), 0.5);

  // A fractional alpha is a valid PEFT value.
  c = ParseWith({{"r", 4}, {"lora_alpha", 6.5}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(0, "self_attn.q_proj")), 6.5 / 4);
}

TEST(LoraConfigTest, RsLoraScalesByAlphaOverSqrtRank) {
  absl::StatusOr<LoraConfig> c = ParseWith({{"r", 16}, {"lora_alpha", 32}, {"use_rslora", true}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->use_rslora);
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(0, "self_attn.q_proj")), 32.0 / 4.0);

  c = ParseWith({{"r", 8}, {"lora_alpha", 16}, {"use_rslora", true}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NEAR(c->ScaleFor(Module(1, "self_attn.v_proj")), 16.0 / std::sqrt(8.0), 1e-12);
}

TEST(LoraConfigTest, ParsesDora) {
  absl::StatusOr<LoraConfig> c = ParseWith({{"use_dora", true}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->use_dora);
}

TEST(LoraConfigTest, MissingPeftTypeIsAccepted) {
  absl::StatusOr<LoraConfig> c = ParseWith({{"peft_type", Erase()}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->r, 8);
}

// ------------------------------------------------------------- targets -----

TEST(LoraConfigTest, TargetListMatchesModuleNameSuffixes) {
  absl::StatusOr<LoraConfig> c = ParseWith({{"target_modules", {"q_proj", "down_proj"}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->target_modules, ElementsAre("q_proj", "down_proj"));
  EXPECT_TRUE(c->Targets(Module(0, "self_attn.q_proj"), 0));
  EXPECT_TRUE(c->Targets(Module(3, "self_attn.q_proj"), 3));
  EXPECT_TRUE(c->Targets(Module(2, "mlp.down_proj"), 2));
  EXPECT_FALSE(c->Targets(Module(0, "self_attn.k_proj"), 0));
  EXPECT_FALSE(c->Targets(Module(0, "self_attn.v_proj"), 0));
  EXPECT_FALSE(c->Targets(Module(0, "mlp.up_proj"), 0));
  // A suffix only counts at a '.' boundary.
  EXPECT_FALSE(c->Targets("model.layers.0.self_attn.xq_proj", 0));
  EXPECT_EQ(TargetedModules(*c).size(), 8u);  // 2 projections x 4 layers
}

TEST(LoraConfigTest, TargetListAcceptsDottedPaths) {
  absl::StatusOr<LoraConfig> c =
      ParseWith({{"target_modules", {"self_attn.o_proj", "layers.1.mlp.up_proj"}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(TargetedModules(*c),
              ElementsAre(Module(0, "self_attn.o_proj"), Module(1, "self_attn.o_proj"),
                          Module(1, "mlp.up_proj"), Module(2, "self_attn.o_proj"),
                          Module(3, "self_attn.o_proj")));
}

TEST(LoraConfigTest, NullOrMissingTargetsDefaultToQAndV) {
  for (const json& targets : {json(nullptr), Erase()}) {
    SCOPED_TRACE(targets.is_discarded() ? "missing" : "null");
    absl::StatusOr<LoraConfig> c = ParseWith({{"target_modules", targets}});
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_THAT(c->target_modules, ElementsAre("q_proj", "v_proj"));
    EXPECT_FALSE(c->all_linear);
    EXPECT_FALSE(c->target_regex.has_value());
    EXPECT_TRUE(c->Targets(Module(1, "self_attn.q_proj"), 1));
    EXPECT_TRUE(c->Targets(Module(1, "self_attn.v_proj"), 1));
    EXPECT_FALSE(c->Targets(Module(1, "self_attn.k_proj"), 1));
    EXPECT_FALSE(c->Targets(Module(1, "mlp.gate_proj"), 1));
  }
}

TEST(LoraConfigTest, TargetRegexMustMatchTheWholeName) {
  absl::StatusOr<LoraConfig> c =
      ParseWith({{"target_modules", R"(.*\.layers\.[02]\.self_attn\.(q|k)_proj)"}});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->target_regex.has_value());
  EXPECT_THAT(c->target_modules, IsEmpty());
  EXPECT_FALSE(c->all_linear);
  EXPECT_THAT(TargetedModules(*c),
              ElementsAre(Module(0, "self_attn.q_proj"), Module(0, "self_attn.k_proj"),
                          Module(2, "self_attn.q_proj"), Module(2, "self_attn.k_proj")));

  // PEFT uses re.fullmatch: a bare "q_proj" regex matches no full module name.
  c = ParseWith({{"target_modules", "q_proj"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->Targets(Module(0, "self_attn.q_proj"), 0));
  EXPECT_THAT(TargetedModules(*c), IsEmpty());
}

TEST(LoraConfigTest, AllLinearTargetsEveryProjection) {
  absl::StatusOr<LoraConfig> c = ParseWith({{"target_modules", "all-linear"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->all_linear);
  EXPECT_FALSE(c->target_regex.has_value());
  EXPECT_EQ(TargetedModules(*c).size(), 28u);  // 7 projections x 4 layers
}

TEST(LoraConfigTest, ExcludeModulesListAndRegex) {
  absl::StatusOr<LoraConfig> c =
      ParseWith({{"target_modules", "all-linear"}, {"exclude_modules", {"o_proj", "mlp.up_proj"}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->exclude_modules, ElementsAre("o_proj", "mlp.up_proj"));
  EXPECT_FALSE(c->Targets(Module(0, "self_attn.o_proj"), 0));
  EXPECT_FALSE(c->Targets(Module(2, "mlp.up_proj"), 2));
  EXPECT_TRUE(c->Targets(Module(2, "mlp.gate_proj"), 2));
  EXPECT_TRUE(c->Targets(Module(0, "self_attn.q_proj"), 0));
  EXPECT_EQ(TargetedModules(*c).size(), 20u);

  c = ParseWith({{"target_modules", {"q_proj", "v_proj"}}, {"exclude_modules", R"(.*\.layers\.0\..*)"}});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->exclude_regex.has_value());
  EXPECT_FALSE(c->Targets(Module(0, "self_attn.q_proj"), 0));
  EXPECT_TRUE(c->Targets(Module(1, "self_attn.q_proj"), 1));
  EXPECT_EQ(TargetedModules(*c).size(), 6u);
}

TEST(LoraConfigTest, LayersToTransformAsInteger) {
  absl::StatusOr<LoraConfig> c = ParseWith({{"layers_to_transform", 1}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->layers_to_transform, ElementsAre(1));
  EXPECT_THAT(TargetedModules(*c),
              ElementsAre(Module(1, "self_attn.q_proj"), Module(1, "self_attn.v_proj")));
}

TEST(LoraConfigTest, LayersToTransformAsList) {
  absl::StatusOr<LoraConfig> c =
      ParseWith({{"layers_to_transform", {0, 3}}, {"layers_pattern", "layers"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->layers_to_transform, ElementsAre(0, 3));
  EXPECT_THAT(TargetedModules(*c),
              ElementsAre(Module(0, "self_attn.q_proj"), Module(0, "self_attn.v_proj"),
                          Module(3, "self_attn.q_proj"), Module(3, "self_attn.v_proj")));
}

// PEFT expands "all-linear" into the list of linear module names before
// matching, so layers_to_transform restricts it like any other list.
TEST(LoraConfigTest, AllLinearHonorsLayersToTransform) {
  absl::StatusOr<LoraConfig> c =
      ParseWith({{"target_modules", "all-linear"}, {"layers_to_transform", {1}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->Targets(Module(0, "self_attn.q_proj"), 0));
  EXPECT_TRUE(c->Targets(Module(1, "self_attn.q_proj"), 1));
  EXPECT_TRUE(c->Targets(Module(1, "mlp.down_proj"), 1));
  EXPECT_FALSE(c->Targets(Module(2, "mlp.down_proj"), 2));
  EXPECT_EQ(TargetedModules(*c).size(), 7u);
}

TEST(LoraConfigTest, LayersToTransformRejectsNonIntegers) {
  EXPECT_TRUE(IsError(ParseWith({{"layers_to_transform", {0, "1"}}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "'layers_to_transform'"}));
  EXPECT_TRUE(IsError(ParseWith({{"layers_to_transform", "0"}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "'layers_to_transform'"}));
  EXPECT_TRUE(IsError(ParseWith({{"layers_pattern", "h"}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "'layers_pattern'"}));
}

// ------------------------------------------------ rank / alpha patterns -----

TEST(LoraConfigTest, RankPatternUsesPeftSuffixSemantics) {
  absl::StatusOr<LoraConfig> c =
      ParseWith({{"r", 8}, {"lora_alpha", 16}, {"rank_pattern", {{"layers.1.self_attn.q_proj", 16}, {"q_proj", 2}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->rank_pattern, ElementsAre(Pair("layers.1.self_attn.q_proj", 16), Pair("q_proj", 2)));
  EXPECT_EQ(c->RankFor(Module(1, "self_attn.q_proj")), 16);  // the layer-1 key only matches layer 1
  EXPECT_EQ(c->RankFor(Module(0, "self_attn.q_proj")), 2);
  EXPECT_EQ(c->RankFor(Module(3, "self_attn.q_proj")), 2);
  EXPECT_EQ(c->RankFor(Module(1, "self_attn.v_proj")), 8);  // no key: r
  // Neither key matches a name that merely ends in the same characters.
  EXPECT_EQ(c->RankFor("model.layers.0.self_attn.xq_proj"), 8);
  // "layers.1." is not "layers.11.".
  EXPECT_EQ(c->RankFor("model.layers.11.self_attn.q_proj"), 2);
  // The scale follows the module's own rank.
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(1, "self_attn.q_proj")), 16.0 / 16);
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(0, "self_attn.q_proj")), 16.0 / 2);
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(0, "self_attn.v_proj")), 16.0 / 8);
}

// The first key (in the file's order) that matches wins, as in PEFT's
// get_pattern_key, even when a later key is more specific.
TEST(LoraConfigTest, RankPatternFirstMatchInFileOrderWins) {
  const std::string text = R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
      "target_modules": ["q_proj", "v_proj"],
      "rank_pattern": {"q_proj": 2, "layers.1.self_attn.q_proj": 16},
      "alpha_pattern": {"v_proj": 4, "model.layers.2.self_attn.v_proj": 64}})";
  absl::StatusOr<LoraConfig> c = LoraConfig::FromJson(text, kLabel);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->rank_pattern, ElementsAre(Pair("q_proj", 2), Pair("layers.1.self_attn.q_proj", 16)));
  EXPECT_EQ(c->RankFor(Module(1, "self_attn.q_proj")), 2);
  EXPECT_EQ(c->RankFor(Module(0, "self_attn.q_proj")), 2);
  EXPECT_DOUBLE_EQ(c->AlphaFor(Module(2, "self_attn.v_proj")), 4);
  EXPECT_DOUBLE_EQ(c->AlphaFor(Module(0, "self_attn.v_proj")), 4);
}

TEST(LoraConfigTest, AlphaPatternAndRankPatternCombine) {
  absl::StatusOr<LoraConfig> c =
      ParseWith({{"r", 8},
                 {"lora_alpha", 16},
                 {"rank_pattern", {{"q_proj", 4}}},
                 {"alpha_pattern", {{R"(layers\.[12]\.self_attn\.v_proj)", 32.5}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->AlphaFor(Module(1, "self_attn.v_proj")), 32.5);
  EXPECT_DOUBLE_EQ(c->AlphaFor(Module(2, "self_attn.v_proj")), 32.5);
  EXPECT_DOUBLE_EQ(c->AlphaFor(Module(0, "self_attn.v_proj")), 16);
  EXPECT_DOUBLE_EQ(c->AlphaFor(Module(1, "self_attn.q_proj")), 16);
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(1, "self_attn.q_proj")), 16.0 / 4);
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(1, "self_attn.v_proj")), 32.5 / 8);
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(3, "self_attn.v_proj")), 16.0 / 8);

  // rsLoRA divides each module's alpha by the square root of its own rank.
  c = ParseWith({{"r", 9}, {"lora_alpha", 12}, {"use_rslora", true}, {"rank_pattern", {{"q_proj", 4}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(0, "self_attn.q_proj")), 12.0 / 2);
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(0, "self_attn.v_proj")), 12.0 / 3);
}

TEST(LoraConfigTest, RankPatternRejectsNonPositiveRanks) {
  EXPECT_TRUE(IsError(ParseWith({{"rank_pattern", {{"q_proj", 0}}}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "rank_pattern[q_proj]"}));
  EXPECT_TRUE(IsError(ParseWith({{"rank_pattern", {{"q_proj", 2.5}}}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "rank_pattern[q_proj]"}));
  EXPECT_TRUE(IsError(ParseWith({{"alpha_pattern", {{"v_proj", "x"}}}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "alpha_pattern[v_proj]"}));
  EXPECT_TRUE(IsError(ParseWith({{"rank_pattern", {1, 2}}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "'rank_pattern'"}));
}

// ----------------------------------------------------------- rejections -----

TEST(LoraConfigTest, ParsesTrainedBiases) {
  for (const char* bias : {"none", "all", "lora_only"}) {
    absl::StatusOr<LoraConfig> c = ParseWith({{"bias", bias}});
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->bias, bias);
  }
  EXPECT_EQ(ParseWith({{"bias", nullptr}})->bias, "none");
  EXPECT_TRUE(IsError(ParseWith({{"bias", "some"}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'bias'", "some"}));
  absl::StatusOr<LoraConfig> lb = ParseWith({{"lora_bias", true}});
  ASSERT_TRUE(lb.ok()) << lb.status();
  EXPECT_TRUE(lb->lora_bias);
  EXPECT_TRUE(IsError(ParseWith({{"lora_bias", "yes"}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'lora_bias'"}));
}

TEST(LoraConfigTest, ParsesModulesToSaveTrainableTokensAndTaskType) {
  absl::StatusOr<LoraConfig> c = ParseWith({{"modules_to_save", {"classifier", "score"}}, {"task_type", "SEQ_CLS"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->modules_to_save, ElementsAre("classifier", "score"));
  EXPECT_EQ(c->task_type, "SEQ_CLS");
  // null and [] save nothing.
  EXPECT_THAT(ParseWith({{"modules_to_save", nullptr}})->modules_to_save, IsEmpty());
  EXPECT_THAT(ParseWith({{"modules_to_save", json::array()}})->modules_to_save, IsEmpty());
  // A list applies to the input embedding; an object names the modules.
  c = ParseWith({{"trainable_token_indices", {1, 2}}});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->trainable_tokens.size(), 1u);
  EXPECT_EQ(c->trainable_tokens[0].first, "embed_tokens");
  EXPECT_THAT(c->trainable_tokens[0].second, ElementsAre(1, 2));
  c = ParseWith({{"trainable_token_indices", {{"lm_head", {4}}, {"embed_tokens", {3, 9}}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->trainable_tokens.size(), 2u);
  EXPECT_TRUE(IsError(ParseWith({{"trainable_token_indices", {1, -2}}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'trainable_token_indices'", "-2"}));
  EXPECT_TRUE(IsError(ParseWith({{"trainable_token_indices", {{"embed_tokens", json::array()}}}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "trainable_token_indices[embed_tokens]"}));
  EXPECT_TRUE(IsError(ParseWith({{"task_type", "TOKEN_CLS"}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'task_type'", "TOKEN_CLS"}));
}

TEST(LoraConfigTest, ParsesAdaLoraAndScalesByInitRank) {
  absl::StatusOr<LoraConfig> c = ParseWith(
      {{"peft_type", "ADALORA"}, {"init_r", 6}, {"lora_alpha", 12}, {"r", 99},
       {"rank_pattern", {{"model.layers.0.self_attn.q_proj.lora_E", {true, false, true, true, false, false}}}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->adalora);
  EXPECT_EQ(c->RankFor(Module(0, "self_attn.q_proj")), 3);  // the kept ranks
  EXPECT_EQ(c->RankFor(Module(0, "self_attn.v_proj")), 6);  // init_r
  // PEFT: lora_alpha / (ranknum + 1e-5), ranknum staying init_r after pruning.
  EXPECT_DOUBLE_EQ(c->ScaleFor(Module(0, "self_attn.q_proj")), 12.0 / (6.0 + 1e-5));
  EXPECT_TRUE(IsError(ParseWith({{"peft_type", "ADALORA"}, {"init_r", 4},
                                 {"rank_pattern", {{"model.layers.0.self_attn.q_proj.lora_E", {true}}}}})
                          .status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "rank_pattern[model.layers.0.self_attn.q_proj.lora_E]"}));
  EXPECT_TRUE(IsError(ParseWith({{"peft_type", "ADALORA"}, {"use_dora", true}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "use_dora"}));
}

TEST(LoraConfigTest, RejectsOtherPeftTypes) {
  EXPECT_TRUE(IsError(ParseWith({{"peft_type", "IA3"}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'peft_type'", "IA3"}));
  EXPECT_TRUE(IsError(ParseWith({{"peft_type", "LOHA"}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'peft_type'", "LOHA"}));
  EXPECT_TRUE(IsError(ParseWith({{"peft_type", 3}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'peft_type'"}));
}

TEST(LoraConfigTest, RejectsLayerReplication) {
  EXPECT_TRUE(IsError(ParseWith({{"layer_replication", {{0, 2}, {1, 3}}}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "'layer_replication'"}));
}

TEST(LoraConfigTest, RejectsOtherUnsupportedFeatures) {
  EXPECT_TRUE(IsError(ParseWith({{"target_parameters", {"mlp.experts.gate_up_proj"}}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "'target_parameters'"}));
  EXPECT_TRUE(IsError(ParseWith({{"use_qalora", true}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'use_qalora'"}));
}

TEST(LoraConfigTest, RejectsBadRegex) {
  EXPECT_TRUE(IsError(ParseWith({{"target_modules", "(q_proj"}}).status(),
                      absl::StatusCode::kInvalidArgument,
                      {kLabel, "'target_modules'", "regular expression"}));
  EXPECT_TRUE(IsError(ParseWith({{"exclude_modules", "[o_proj"}}).status(),
                      absl::StatusCode::kInvalidArgument,
                      {kLabel, "'exclude_modules'", "regular expression"}));
}

TEST(LoraConfigTest, RejectsMalformedTargetModules) {
  EXPECT_TRUE(IsError(ParseWith({{"target_modules", 5}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'target_modules'"}));
  EXPECT_TRUE(IsError(ParseWith({{"target_modules", {"q_proj", 1}}}).status(),
                      absl::StatusCode::kInvalidArgument, {kLabel, "'target_modules'"}));
}

TEST(LoraConfigTest, RejectsBadRank) {
  for (const json& r : {json(0), json(-4), json(2.5)}) {
    SCOPED_TRACE(r.dump());
    EXPECT_TRUE(IsError(ParseWith({{"r", r}}).status(), absl::StatusCode::kInvalidArgument,
                        {kLabel, "'r'", "positive integer"}));
  }
  EXPECT_TRUE(IsError(ParseWith({{"r", "8"}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'r'", "number"}));
}

TEST(LoraConfigTest, RejectsNonNumericAlpha) {
  EXPECT_TRUE(IsError(ParseWith({{"lora_alpha", "16"}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'lora_alpha'", "number"}));
  EXPECT_TRUE(IsError(ParseWith({{"lora_alpha", {16}}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'lora_alpha'"}));
}

TEST(LoraConfigTest, RejectsNonBooleanFlags) {
  EXPECT_TRUE(IsError(ParseWith({{"use_rslora", "true"}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'use_rslora'", "boolean"}));
  EXPECT_TRUE(IsError(ParseWith({{"use_dora", 1}}).status(), absl::StatusCode::kInvalidArgument,
                      {kLabel, "'use_dora'", "boolean"}));
}

TEST(LoraConfigTest, RejectsBadJson) {
  for (const char* text : {"", "{", "{\"r\": 8,}", "[1, 2]", "\"LORA\"", "{\"r\": 8} trailing"}) {
    SCOPED_TRACE(text);
    EXPECT_TRUE(IsError(LoraConfig::FromJson(text, kLabel).status(), absl::StatusCode::kInvalidArgument,
                        {kLabel, "JSON"}));
  }
}

// Patterns whose backtracking explodes are refused before they ever run
// (the fuzzer found "q_pro*****|||" hanging the loader in std::regex).
TEST(LoraConfigTest, PatternsThatBacktrackExponentiallyAreRefused) {
  for (const std::string bad : {"q_pro*****|||||||j", "(a+)*", "(a|aa)+", "(.*)*x", "a{2}*", "x*?*",
                                ".*.*.*.*.*q_proj"}) {
    EXPECT_TRUE(IsError(ParseWith({{"target_modules", bad}}).status(), absl::StatusCode::kInvalidArgument,
                        {"target_modules"}))
        << bad;
    EXPECT_TRUE(IsError(ParseWith({{"rank_pattern", {{bad, 8}}}}).status(), absl::StatusCode::kInvalidArgument,
                        {"rank_pattern"}))
        << bad;
  }
  EXPECT_TRUE(IsError(ParseWith({{"target_modules", std::string(300, 'a')}}).status(),
                      absl::StatusCode::kInvalidArgument, {"target_modules", "256"}));
  // What PEFT configs do write is accepted, and matches.
  for (const std::string good : {R"(.*\.(q|v)_proj)", R"(model\.layers\.\d+\.self_attn\.(q_proj|v_proj))",
                                 R"((.*\.)?q_proj)", R"(.*?layers\.[0-3]\..*q_proj)", "[a-z_]+\\.q_proj"}) {
    absl::StatusOr<LoraConfig> c = ParseWith({{"target_modules", good}});
    ASSERT_TRUE(c.ok()) << good << ": " << c.status();
  }
  absl::StatusOr<LoraConfig> c = ParseWith({{"target_modules", R"(.*\.(q|v)_proj)"}});
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->Targets(Module(1, "self_attn.q_proj"), 1));
  EXPECT_FALSE(c->Targets(Module(1, "self_attn.k_proj"), 1));
}

// The fuzzer's find: an 'r' far past int64 was cast unchecked.
TEST(LoraConfigTest, RanksBeyondTheLimitAreRefusedNotCast) {
  const std::string huge(120, '8');
  const std::string text = R"({"peft_type": "LORA", "r": )" + huge + R"(, "target_modules": ["q_proj"]})";
  EXPECT_TRUE(IsError(LoraConfig::FromJson(text, kLabel).status(), absl::StatusCode::kInvalidArgument, {"'r'", "65536"}));
  EXPECT_TRUE(IsError(ParseWith({{"r", 65537}}).status(), absl::StatusCode::kInvalidArgument, {"'r'"}));
  EXPECT_TRUE(ParseWith({{"r", 65536}}).ok());
  EXPECT_TRUE(IsError(ParseWith({{"rank_pattern", {{"q_proj", 1e30}}}}).status(), absl::StatusCode::kInvalidArgument,
                      {"rank_pattern"}));
}

}  // namespace
}  // namespace adapterd::adapters
