#include "tests/fakes/fake_adapter.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/test_env.h"

namespace adapterd::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The file names PEFT's save_pretrained uses.
constexpr char kConfigName[] = "adapter_config.json";
constexpr char kWeightsName[] = "adapter_model.safetensors";

const std::map<std::string, std::string> kMetadata = {{"format", "pt"}};

std::vector<model::StTensorToWrite> ToWrite(const std::vector<FakeTensor>& tensors) {
  std::vector<model::StTensorToWrite> w;
  w.reserve(tensors.size());
  for (const FakeTensor& t : tensors) w.push_back({t.name, t.dtype, t.shape, t.bytes});
  return w;
}

}  // namespace

const model::ModelConfig& DemoModelConfig() {
  static const model::ModelConfig* const kDemo = [] {
    auto* c = new model::ModelConfig;
    c->architecture_name = "LlamaForCausalLM";
    c->vocab_size = 2048;
    c->hidden_size = 256;
    c->intermediate_size = 688;
    c->num_layers = 4;
    c->num_heads = 8;
    c->num_kv_heads = 4;
    c->head_dim = 32;
    c->max_position_embeddings = 2048;
    return c;
  }();
  return *kDemo;
}

std::string ProjPath(const std::string& module) {
  const bool attn = module == "q_proj" || module == "k_proj" || module == "v_proj" || module == "o_proj";
  return absl::StrCat(attn ? "self_attn." : "mlp.", module);
}

std::pair<int64_t, int64_t> ProjDims(const model::ModelConfig& c, const std::string& path) {
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  if (path == "self_attn.q_proj") return {q, c.hidden_size};
  if (path == "self_attn.k_proj" || path == "self_attn.v_proj") return {kv, c.hidden_size};
  if (path == "self_attn.o_proj") return {c.hidden_size, q};
  if (path == "mlp.gate_proj" || path == "mlp.up_proj") return {c.intermediate_size, c.hidden_size};
  if (path == "mlp.down_proj") return {c.hidden_size, c.intermediate_size};
  ADD_FAILURE() << "no projection " << path;
  return {0, 0};
}

std::string LoraKey(int64_t layer, const std::string& path, const std::string& kind) {
  return absl::StrCat("base_model.model.model.layers.", layer, ".", path, ".", kind);
}

std::string RandomF32(int64_t n, float amplitude, uint32_t seed) {
  std::string out(static_cast<size_t>(n) * 4, '\0');
  uint32_t s = seed * 2654435761u + 12345u;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    const float v = (static_cast<float>(s >> 8) / static_cast<float>(1u << 24) * 2.0f - 1.0f) * amplitude;
    std::memcpy(&out[static_cast<size_t>(i) * 4], &v, 4);
  }
  return out;
}

json PeftLoraConfig(int64_t r, double alpha, json target_modules) {
  return json{{"peft_type", "LORA"},
              {"task_type", "CAUSAL_LM"},
              {"base_model_name_or_path", "demo"},
              {"r", r},
              {"lora_alpha", alpha},
              {"lora_dropout", 0.0},
              {"target_modules", std::move(target_modules)},
              {"use_rslora", false},
              {"use_dora", false},
              {"bias", "none"},
              {"modules_to_save", nullptr},
              {"layers_to_transform", nullptr},
              {"rank_pattern", json::object()},
              {"alpha_pattern", json::object()},
              {"fan_in_fan_out", false},
              {"inference_mode", true}};
}

namespace {

at::ScalarType TorchType(model::StDType dtype) {
  return dtype == model::StDType::kF16 ? at::kHalf : dtype == model::StDType::kBF16 ? at::kBFloat16 : at::kFloat;
}

}  // namespace

void ConvertTensor(FakeTensor& t, model::StDType dtype) {
  ASSERT_EQ(t.dtype, model::StDType::kF32) << t.name;
  const int64_t n = static_cast<int64_t>(t.bytes.size() / 4);
  at::Tensor v = at::from_blob(t.bytes.data(), {n}, at::kFloat).to(TorchType(dtype)).contiguous();
  t.bytes.assign(static_cast<const char*>(v.data_ptr()), v.nbytes());
  t.dtype = dtype;
}

void SetElement(FakeTensor& t, int64_t index, float value) {
  const at::Tensor v = at::full({1}, value, at::kFloat).to(TorchType(t.dtype));
  const size_t size = v.nbytes();
  ASSERT_LE((index + 1) * static_cast<int64_t>(size), static_cast<int64_t>(t.bytes.size())) << t.name;
  std::memcpy(&t.bytes[static_cast<size_t>(index) * size], v.data_ptr(), size);
}

// ------------------------------------------------------------ FakeAdapter --

FakeTensor* FakeAdapter::Find(const std::string& name) {
  for (FakeTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const FakeTensor* FakeAdapter::Find(const std::string& name) const {
  return const_cast<FakeAdapter*>(this)->Find(name);
}

void FakeAdapter::Add(std::string name, std::vector<int64_t> shape, uint32_t seed, float amplitude) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  tensors.push_back(
      FakeTensor{std::move(name), model::StDType::kF32, std::move(shape), RandomF32(n, amplitude, seed)});
}

void FakeAdapter::Remove(const std::string& name) {
  auto it = std::remove_if(tensors.begin(), tensors.end(), [&](const FakeTensor& t) { return t.name == name; });
  ASSERT_NE(it, tensors.end()) << "no tensor " << name;
  tensors.erase(it, tensors.end());
}

void FakeAdapter::Replace(const std::string& name, std::vector<int64_t> shape, uint32_t seed, float amplitude) {
  Remove(name);
  Add(name, std::move(shape), seed, amplitude);
}

std::string FakeAdapter::Weights() const { return model::SerializeSafetensors(ToWrite(tensors), kMetadata); }

std::map<std::string, std::string> FakeAdapter::Files() const {
  return {{kConfigName, config.dump(2)}, {kWeightsName, Weights()}};
}

absl::Status FakeAdapter::WriteTo(const std::string& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  const fs::path config_path = fs::path(dir) / kConfigName;
  std::ofstream out(config_path);
  out << config.dump(2);
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", config_path.string()));
  return model::WriteSafetensors((fs::path(dir) / kWeightsName).string(), ToWrite(tensors), kMetadata);
}

std::string FakeAdapter::Write(const std::string& name) const {
  const std::string dir = MakeTempDir(name);
  const absl::Status s = WriteTo(dir);
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

// --------------------------------------------------------------- builders --

FakeAdapter MakeLora(const model::ModelConfig& base, const LoraSpec& spec) {
  FakeAdapter a;
  a.config = PeftLoraConfig(spec.r, spec.alpha, spec.targets);
  uint32_t seed = spec.seed;
  for (int64_t l = 0; l < base.num_layers; ++l) {
    for (const std::string& module : spec.targets) {
      const std::string path = ProjPath(module);
      const auto [out, in] = ProjDims(base, path);
      a.Add(LoraKey(l, path, "lora_A.weight"), {spec.r, in}, seed++, spec.a_amplitude);
      a.Add(LoraKey(l, path, "lora_B.weight"), {out, spec.r}, seed++, spec.b_amplitude);
    }
  }
  return a;
}

FakeAdapter DemoLora(const LoraSpec& spec) { return MakeLora(DemoModelConfig(), spec); }

FakeAdapter QvLora(uint32_t seed) { return DemoLora({.seed = seed}); }

}  // namespace adapterd::testing
