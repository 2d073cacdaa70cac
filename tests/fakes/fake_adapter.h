// A fake PEFT adapter: the adapter_config.json and the tensors of
// adapter_model.safetensors that PEFT's save_pretrained writes for a LoRA,
// built in memory without Python, edited by tests (tensors found, removed,
// replaced or added; config keys set) and written to a directory or to an
// upload map. Tensor values are pseudo-random from a seed, so the same calls
// give the same bytes in every run. A plain value; not thread-safe.
#ifndef ADAPTERD_TESTS_FAKES_FAKE_ADAPTER_H_
#define ADAPTERD_TESTS_FAKES_FAKE_ADAPTER_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"

namespace adapterd::testing {

// The base model that server/model/demo_checkpoint.cc writes, its dimensions
// spelled out here so that tests can check them against the loaded model.
const model::ModelConfig& DemoModelConfig();

// "q_proj" -> "self_attn.q_proj", "down_proj" -> "mlp.down_proj".
std::string ProjPath(const std::string& module);
// [out, in] of the projection at `path` ("self_attn.q_proj", "mlp.up_proj",
// ...) in `base`. An unknown path fails the test and gives {0, 0}.
std::pair<int64_t, int64_t> ProjDims(const model::ModelConfig& base, const std::string& path);
// The PEFT key of a per-layer tensor, e.g. LoraKey(1, "self_attn.v_proj",
// "lora_A.weight") = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight".
std::string LoraKey(int64_t layer, const std::string& path, const std::string& kind);

// n float32 values in [-amplitude, amplitude] as little-endian bytes,
// deterministic in `seed`.
std::string RandomF32(int64_t n, float amplitude, uint32_t seed);

// adapter_config.json as PEFT writes it for a plain LoRA (no DoRA, rsLoRA,
// bias or patterns); `target_modules` is a list of names or a regex string.
nlohmann::json PeftLoraConfig(int64_t r, double alpha, nlohmann::json target_modules);

struct FakeTensor {
  std::string name;
  model::StDType dtype = model::StDType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;  // raw little-endian, row-major
};

// Rewrites a float32 tensor's values in `dtype` (F32, F16 or BF16, rounded
// as torch rounds).
void ConvertTensor(FakeTensor& t, model::StDType dtype);
// Sets the flat element `index` of an F32, F16 or BF16 tensor to `value`
// (NaN and infinities included) in the tensor's dtype.
void SetElement(FakeTensor& t, int64_t index, float value);

struct FakeAdapter {
  nlohmann::json config;            // adapter_config.json; edit freely
  std::vector<FakeTensor> tensors;  // adapter_model.safetensors, in file order

  // The tensor called `name`, or null.
  FakeTensor* Find(const std::string& name);
  const FakeTensor* Find(const std::string& name) const;
  // Appends a float32 tensor of RandomF32 values.
  void Add(std::string name, std::vector<int64_t> shape, uint32_t seed, float amplitude = 0.05f);
  // Removes the tensor; fails the test when there is none.
  void Remove(const std::string& name);
  // Removes the tensor (failing the test when there is none) and appends a
  // new one of that name, as Add does.
  void Replace(const std::string& name, std::vector<int64_t> shape, uint32_t seed, float amplitude = 0.05f);

  // The bytes of adapter_model.safetensors.
  std::string Weights() const;
  // An upload: file name -> contents of both files.
  std::map<std::string, std::string> Files() const;
  // Writes both files into `dir`, creating it when needed.
  absl::Status WriteTo(const std::string& dir) const;
  // Writes both files into a fresh temporary directory named after `name`
  // and returns it; a failed write fails the test.
  std::string Write(const std::string& name) const;
};

struct LoraSpec {
  int64_t r = 4;
  double alpha = 8;
  std::vector<std::string> targets = {"q_proj", "v_proj"};  // module names
  uint32_t seed = 1;
  float a_amplitude = 0.1f;
  float b_amplitude = 0.05f;  // non-zero, so the adapter changes the output
};

// A LoRA on spec.targets of every layer of `base`: lora_A [r, in] and lora_B
// [out, r] for each, seeded spec.seed, spec.seed + 1, ... in the order layer,
// target, A then B. target_modules lists spec.targets.
FakeAdapter MakeLora(const model::ModelConfig& base, const LoraSpec& spec);
// MakeLora for the demo model (DemoModelConfig()).
FakeAdapter DemoLora(const LoraSpec& spec);
// The demo model's usual test adapter: q_proj and v_proj, r = 4, alpha = 8.
FakeAdapter QvLora(uint32_t seed = 1);

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_FAKES_FAKE_ADAPTER_H_
