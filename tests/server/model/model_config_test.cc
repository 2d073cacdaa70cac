// Unit tests for ModelConfig::FromJson / FromDirectory / NumParameters.
#include "server/model/model_config.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_env.h"

namespace adapterd::model {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kLabel[] = "/models/test/config.json";

// config.json as transformers 4.57 writes it for a Llama 3.2-style model.
constexpr char kLlamaJson[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "dtype": "bfloat16",
  "eos_token_id": 128001,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "transformers_version": "4.57.0",
  "use_cache": true,
  "vocab_size": 128256
})";

// Qwen2-0.5B's config.json: no head_dim / attention_bias keys.
constexpr char kQwen2Json[] = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 131072,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// A minimal valid Llama config that tests mutate.
json SmallLlama() {
  return json{{"architectures", {"LlamaForCausalLM"}},
              {"vocab_size", 100},
              {"hidden_size", 16},
              {"intermediate_size", 40},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"max_position_embeddings", 128},
              {"rms_norm_eps", 1e-6},
              {"eos_token_id", 2}};
}

absl::StatusOr<ModelConfig> Parse(const json& j) { return ModelConfig::FromJson(j.dump(), kLabel); }

// Asserts that `s` is INVALID_ARGUMENT and that its message names the label
// and every one of `needles`.
void ExpectInvalid(const absl::Status& s, const std::vector<std::string>& needles,
                   const std::string& label = kLabel) {
  ASSERT_FALSE(s.ok()) << "expected an error mentioning " << ::testing::PrintToString(needles);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(label));
  for (const std::string& n : needles) EXPECT_THAT(std::string(s.message()), HasSubstr(n));
}

void WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  ASSERT_TRUE(out) << path;
}

TEST(ModelConfigTest, ParsesFullLlamaConfig) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kLlamaJson, kLabel);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kLlama);
  EXPECT_EQ(c->architecture_name, "LlamaForCausalLM");
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->hidden_size, 2048);
  EXPECT_EQ(c->intermediate_size, 8192);
  EXPECT_EQ(c->num_layers, 16);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_EQ(c->rope.type, RopeConfig::Type::kDefault);
  EXPECT_DOUBLE_EQ(c->rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(c->rope.factor, 1.0);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128001));
}

TEST(ModelConfigTest, ExplicitHeadDimOverridesHiddenOverHeads) {
  json j = SmallLlama();
  j["head_dim"] = 8;  // hidden 16 / 4 heads would give 4
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 8);
}

TEST(ModelConfigTest, LlamaAttentionAndMlpBiases) {
  json j = SmallLlama();
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->o_proj_bias);  // Llama's o_proj follows attention_bias
  EXPECT_TRUE(c->mlp_bias);
}

TEST(ModelConfigTest, ParsesQwen2Config) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kQwen2Json, kLabel);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kQwen2);
  EXPECT_EQ(c->architecture_name, "Qwen2ForCausalLM");
  EXPECT_EQ(c->vocab_size, 151936);
  EXPECT_EQ(c->hidden_size, 896);
  EXPECT_EQ(c->intermediate_size, 4864);
  EXPECT_EQ(c->num_layers, 24);
  EXPECT_EQ(c->num_heads, 14);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 64);  // 896 / 14
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_TRUE(c->tie_word_embeddings);
  // Qwen2 always has q/k/v biases and never o_proj / MLP biases.
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_EQ(c->rope.type, RopeConfig::Type::kDefault);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(151643));
}

TEST(ModelConfigTest, Qwen2IgnoresAttentionBiasKey) {
  json j = json::parse(kQwen2Json);
  j["attention_bias"] = false;  // not a Qwen2 key; q/k/v stay biased
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->o_proj_bias);
}

TEST(ModelConfigTest, Llama3RopeScaling) {
  json j = SmallLlama();
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"factor", 32.0},
                       {"high_freq_factor", 4.0},
                       {"low_freq_factor", 1.0},
                       {"original_max_position_embeddings", 8192},
                       {"rope_type", "llama3"}};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeConfig::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(c->rope.factor, 32.0);
  EXPECT_DOUBLE_EQ(c->rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 8192);
}

TEST(ModelConfigTest, Llama3RopeScalingNonDefaultValues) {
  json j = SmallLlama();
  j["rope_scaling"] = {{"factor", 8.0},
                       {"high_freq_factor", 2.5},
                       {"low_freq_factor", 0.5},
                       {"original_max_position_embeddings", 4096},
                       {"rope_type", "llama3"}};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeConfig::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope.theta, 10000.0);  // default when rope_theta is absent
  EXPECT_DOUBLE_EQ(c->rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope.low_freq_factor, 0.5);
  EXPECT_DOUBLE_EQ(c->rope.high_freq_factor, 2.5);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 4096);
}

TEST(ModelConfigTest, Llama3RopeNeedsHighAboveLowFactor) {
  json j = SmallLlama();
  j["rope_scaling"] = {{"factor", 8.0},
                       {"high_freq_factor", 1.0},
                       {"low_freq_factor", 1.0},
                       {"original_max_position_embeddings", 8192},
                       {"rope_type", "llama3"}};
  ExpectInvalid(Parse(j).status(), {"high_freq_factor", "low_freq_factor"});
}

TEST(ModelConfigTest, RopeParametersTransformers5Style) {
  json j = SmallLlama();
  j["rope_parameters"] = {{"rope_type", "llama3"},
                          {"rope_theta", 500000.0},
                          {"factor", 16.0},
                          {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeConfig::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(c->rope.factor, 16.0);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 8192);
}

TEST(ModelConfigTest, RopeParametersDefaultTypeCarriesTheta) {
  json j = SmallLlama();
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeConfig::Type::kDefault);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(c->rope.factor, 1.0);
}

TEST(ModelConfigTest, LinearRopeScaling) {
  json j = SmallLlama();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};  // the older "type" spelling
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope.type, RopeConfig::Type::kLinear);
  EXPECT_DOUBLE_EQ(c->rope.factor, 4.0);
}

TEST(ModelConfigTest, LinearRopeScalingNeedsPositiveFactor) {
  json j = SmallLlama();
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 0.0}};
  ExpectInvalid(Parse(j).status(), {"rope_scaling", "factor"});
}

TEST(ModelConfigTest, EosTokenIdList) {
  json j = SmallLlama();
  j["eos_token_id"] = {7, 3, 7, 9};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(7, 3, 9));  // order kept, duplicate dropped
}

TEST(ModelConfigTest, NoEosTokenId) {
  json j = SmallLlama();
  j.erase("eos_token_id");
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->eos_token_ids.empty());
}

TEST(ModelConfigTest, NegativeEosTokenIdIsRejected) {
  json j = SmallLlama();
  j["eos_token_id"] = {2, -1};
  ExpectInvalid(Parse(j).status(), {"eos_token_id"});
}

TEST(ModelConfigTest, KvHeadsDefaultToAttentionHeads) {
  json j = SmallLlama();
  j.erase("num_key_value_heads");
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 4);

  j["num_key_value_heads"] = nullptr;  // explicit null also means "same as heads"
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_kv_heads, 4);
}

TEST(ModelConfigTest, NumParametersOfSmallConfig) {
  absl::StatusOr<ModelConfig> c = Parse(SmallLlama());
  ASSERT_TRUE(c.ok()) << c.status();
  // hidden 16, inter 40, heads 4 x head_dim 4 (q out 16), kv 2 x 4 (k/v out 8).
  // Per layer: q 16*16=256, k 8*16=128, v 128, o 16*16=256 -> 768;
  // gate/up/down 3*16*40=1920; two norms 2*16=32 -> 2720. Two layers: 5440.
  // embed 100*16=1600, lm_head 1600, final norm 16.
  EXPECT_EQ(c->NumParameters(), 5440 + 1600 + 1600 + 16);  // 8656

  json tied = SmallLlama();
  tied["tie_word_embeddings"] = true;
  c = Parse(tied);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->NumParameters(), 8656 - 1600);

  json biased = SmallLlama();
  biased["attention_bias"] = true;  // q/k/v biases 16+8+8, o_proj bias 16
  biased["mlp_bias"] = true;        // gate/up 40+40, down 16
  c = Parse(biased);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->NumParameters(), 8656 + 2 * (32 + 16 + 96));

  json qwen = SmallLlama();
  qwen["architectures"] = {"Qwen2ForCausalLM"};  // q/k/v biases only
  c = Parse(qwen);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->NumParameters(), 8656 + 2 * 32);
}

TEST(ModelConfigTest, NumParametersOfLlama32_1B) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJson(kLlamaJson, kLabel);
  ASSERT_TRUE(c.ok()) << c.status();
  // Llama 3.2 1B: 1,235,814,400 parameters (tied embeddings).
  EXPECT_EQ(c->NumParameters(), 1235814400);
}

// ---------------------------------------------------------------- errors ----

TEST(ModelConfigErrorTest, BadJson) {
  ExpectInvalid(ModelConfig::FromJson("{\"architectures\": [", kLabel).status(), {"JSON"});
}

TEST(ModelConfigErrorTest, NotAnObject) {
  ExpectInvalid(ModelConfig::FromJson("[1, 2, 3]", kLabel).status(), {"object"});
}

TEST(ModelConfigErrorTest, MissingArchitectures) {
  json j = SmallLlama();
  j.erase("architectures");
  ExpectInvalid(Parse(j).status(), {"architectures"});
  j["architectures"] = json::array();
  ExpectInvalid(Parse(j).status(), {"architectures"});
}

TEST(ModelConfigErrorTest, UnsupportedArchitecture) {
  json j = SmallLlama();
  j["architectures"] = {"MistralForCausalLM"};
  ExpectInvalid(Parse(j).status(), {"MistralForCausalLM", "not supported"});
}

TEST(ModelConfigErrorTest, MissingRequiredKeys) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "max_position_embeddings"}) {
    SCOPED_TRACE(key);
    json j = SmallLlama();
    j.erase(key);
    ExpectInvalid(Parse(j).status(), {key, "missing"});
  }
}

TEST(ModelConfigErrorTest, NegativeOrZeroValues) {
  for (const char* key : {"hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "intermediate_size"}) {
    for (int value : {0, -4}) {
      SCOPED_TRACE(std::string(key) + "=" + std::to_string(value));
      json j = SmallLlama();
      j[key] = value;
      ExpectInvalid(Parse(j).status(), {key, std::to_string(value)});
    }
  }
}

TEST(ModelConfigErrorTest, NonPositiveRmsNormEps) {
  json j = SmallLlama();
  j["rms_norm_eps"] = 0.0;
  ExpectInvalid(Parse(j).status(), {"rms_norm_eps"});
}

TEST(ModelConfigErrorTest, StringWhereIntegerExpected) {
  json j = SmallLlama();
  j["hidden_size"] = "16";
  ExpectInvalid(Parse(j).status(), {"hidden_size", "integer"});
}

TEST(ModelConfigErrorTest, FloatWhereIntegerExpected) {
  json j = SmallLlama();
  j["num_hidden_layers"] = 2.5;
  ExpectInvalid(Parse(j).status(), {"num_hidden_layers", "integer"});
}

TEST(ModelConfigErrorTest, WrongTypeForBoolAndDouble) {
  json j = SmallLlama();
  j["tie_word_embeddings"] = "yes";
  ExpectInvalid(Parse(j).status(), {"tie_word_embeddings", "boolean"});
  j = SmallLlama();
  j["rope_theta"] = "big";
  ExpectInvalid(Parse(j).status(), {"rope_theta", "number"});
}

TEST(ModelConfigErrorTest, UnsupportedRopeType) {
  json j = SmallLlama();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  ExpectInvalid(Parse(j).status(), {"rope_scaling", "yarn", "not supported"});

  json k = SmallLlama();
  k["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 10000.0}, {"factor", 2.0}};
  ExpectInvalid(Parse(k).status(), {"rope_parameters", "dynamic"});
}

TEST(ModelConfigErrorTest, RopeScalingNotAnObject) {
  json j = SmallLlama();
  j["rope_scaling"] = "linear";
  ExpectInvalid(Parse(j).status(), {"rope_scaling"});
}

TEST(ModelConfigErrorTest, HeadsNotDivisibleByKvHeads) {
  json j = SmallLlama();
  j["num_key_value_heads"] = 3;  // 4 heads
  ExpectInvalid(Parse(j).status(), {"num_attention_heads", "num_key_value_heads"});
}

TEST(ModelConfigErrorTest, HiddenNotDivisibleByHeads) {
  json j = SmallLlama();
  j["hidden_size"] = 18;  // 4 heads, no head_dim
  ExpectInvalid(Parse(j).status(), {"hidden_size", "num_attention_heads"});
}

TEST(ModelConfigErrorTest, OddHeadDim) {
  json j = SmallLlama();
  j["head_dim"] = 5;
  ExpectInvalid(Parse(j).status(), {"head_dim", "even"});
}

TEST(ModelConfigErrorTest, SlidingWindowQwen2) {
  json j = json::parse(kQwen2Json);
  j["use_sliding_window"] = true;
  ExpectInvalid(Parse(j).status(), {"use_sliding_window"});
}

TEST(ModelConfigErrorTest, GeluActivation) {
  json j = SmallLlama();
  j["hidden_act"] = "gelu";
  ExpectInvalid(Parse(j).status(), {"hidden_act", "gelu"});
}

TEST(ModelConfigTest, SiluAndSwishActivationsAccepted) {
  for (const char* act : {"silu", "swish"}) {
    json j = SmallLlama();
    j["hidden_act"] = act;
    EXPECT_TRUE(Parse(j).ok()) << act;
  }
}

// ---------------------------------------------------------- FromDirectory ----

TEST(ModelConfigDirectoryTest, MergesGenerationConfigEos) {
  const std::string dir = testing::MakeTempDir("config-merge");
  json j = SmallLlama();
  j["eos_token_id"] = {2, 5};
  WriteText(fs::path(dir) / "config.json", j.dump(2));
  WriteText(fs::path(dir) / "generation_config.json",
            R"({"bos_token_id": 1, "eos_token_id": [5, 9, 2, 11], "do_sample": true})");
  absl::StatusOr<ModelConfig> c = ModelConfig::FromDirectory(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2, 5, 9, 11));
  EXPECT_EQ(c->vocab_size, 100);
}

TEST(ModelConfigDirectoryTest, GenerationConfigScalarEos) {
  const std::string dir = testing::MakeTempDir("config-gen-scalar");
  json j = SmallLlama();
  j.erase("eos_token_id");
  WriteText(fs::path(dir) / "config.json", j.dump());
  WriteText(fs::path(dir) / "generation_config.json", R"({"eos_token_id": 42})");
  absl::StatusOr<ModelConfig> c = ModelConfig::FromDirectory(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(42));
}

TEST(ModelConfigDirectoryTest, WithoutGenerationConfig) {
  const std::string dir = testing::MakeTempDir("config-no-gen");
  WriteText(fs::path(dir) / "config.json", SmallLlama().dump());
  absl::StatusOr<ModelConfig> c = ModelConfig::FromDirectory(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2));
}

TEST(ModelConfigDirectoryTest, EosNotBelowVocab) {
  const std::string dir = testing::MakeTempDir("config-eos-vocab");
  const std::string path = (fs::path(dir) / "config.json").string();
  json j = SmallLlama();
  j["eos_token_id"] = 100;  // vocab_size is 100
  WriteText(path, j.dump());
  ExpectInvalid(ModelConfig::FromDirectory(dir).status(), {"eos_token_id", "100", "vocab_size"},
                path);
}

TEST(ModelConfigDirectoryTest, GenerationConfigEosNotBelowVocab) {
  const std::string dir = testing::MakeTempDir("config-gen-eos-vocab");
  WriteText(fs::path(dir) / "config.json", SmallLlama().dump());
  WriteText(fs::path(dir) / "generation_config.json", R"({"eos_token_id": [2, 150]})");
  ExpectInvalid(ModelConfig::FromDirectory(dir).status(), {"eos_token_id", "150"},
                (fs::path(dir) / "config.json").string());
}

TEST(ModelConfigDirectoryTest, BadGenerationConfig) {
  const std::string dir = testing::MakeTempDir("config-bad-gen");
  WriteText(fs::path(dir) / "config.json", SmallLlama().dump());
  const std::string gen = (fs::path(dir) / "generation_config.json").string();
  WriteText(gen, "{eos");
  ExpectInvalid(ModelConfig::FromDirectory(dir).status(), {"JSON"}, gen);
}

TEST(ModelConfigDirectoryTest, ErrorsNameTheConfigPath) {
  const std::string dir = testing::MakeTempDir("config-bad-key");
  const std::string path = (fs::path(dir) / "config.json").string();
  json j = SmallLlama();
  j.erase("hidden_size");
  WriteText(path, j.dump());
  ExpectInvalid(ModelConfig::FromDirectory(dir).status(), {"hidden_size"}, path);
}

TEST(ModelConfigDirectoryTest, MissingConfigJson) {
  const std::string dir = testing::MakeTempDir("config-missing");
  absl::Status s = ModelConfig::FromDirectory(dir).status();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr((fs::path(dir) / "config.json").string()));
}

}  // namespace
}  // namespace adapterd::model
