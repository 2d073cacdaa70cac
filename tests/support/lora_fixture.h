// Writes synthetic PEFT LoRA adapters (adapter_config.json +
// adapter_model.safetensors) for a base model, without Python.
#ifndef ADAPTERD_TESTS_SUPPORT_LORA_FIXTURE_H_
#define ADAPTERD_TESTS_SUPPORT_LORA_FIXTURE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/model/model_config.h"

namespace adapterd::testing {

struct LoraSpec {
  int64_t r = 4;
  double alpha = 8;
  std::vector<std::string> targets = {"q_proj", "v_proj"};
  uint64_t seed = 1;
};

// Writes a PEFT-layout LoRA adapter for every layer of `base` into `dir`,
// with random A and B (B non-zero, so the adapter changes the output).
absl::Status WriteLoraAdapter(const std::string& dir, const model::ModelConfig& base,
                              const LoraSpec& spec);

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_SUPPORT_LORA_FIXTURE_H_
