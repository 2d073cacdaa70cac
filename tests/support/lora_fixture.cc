#include "tests/support/lora_fixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/model/safetensors.h"

namespace adapterd::testing {

absl::Status WriteLoraAdapter(const std::string& dir, const model::ModelConfig& c,
                              const LoraSpec& spec) {
  std::filesystem::create_directories(dir);
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  auto shape = [&](const std::string& t) -> std::pair<int64_t, int64_t> {  // {out, in}
    if (t == "q_proj") return {q, c.hidden_size};
    if (t == "k_proj" || t == "v_proj") return {kv, c.hidden_size};
    if (t == "o_proj") return {c.hidden_size, q};
    if (t == "gate_proj" || t == "up_proj") return {c.intermediate_size, c.hidden_size};
    return {c.hidden_size, c.intermediate_size};  // down_proj
  };
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(spec.seed);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const std::string& t : spec.targets) {
      const bool attn = t == "q_proj" || t == "k_proj" || t == "v_proj" || t == "o_proj";
      const std::string p = absl::StrCat("base_model.model.model.layers.", l, attn ? ".self_attn." : ".mlp.", t);
      auto [out, in] = shape(t);
      tensors.emplace_back(p + ".lora_A.weight",
                           at::normal(0.0, 1.0 / std::sqrt(static_cast<double>(in)), {spec.r, in}, gen));
      tensors.emplace_back(p + ".lora_B.weight",
                           at::normal(0.0, 0.5 / std::sqrt(static_cast<double>(spec.r)), {out, spec.r}, gen));
    }
  }
  std::vector<model::StTensorToWrite> out;
  for (const auto& [name, t] : tensors) {
    out.push_back({name, model::StDType::kF32, t.sizes().vec(),
                   std::string_view(static_cast<const char*>(t.data_ptr()), t.nbytes())});
  }
  if (absl::Status s = model::WriteSafetensors(dir + "/adapter_model.safetensors", out, {{"format", "pt"}});
      !s.ok()) {
    return s;
  }
  std::vector<std::string> quoted;
  for (const auto& t : spec.targets) quoted.push_back(absl::StrCat("\"", t, "\""));
  std::ofstream(dir + "/adapter_config.json")
      << absl::StrCat(R"({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": )", spec.r,
                      R"(, "lora_alpha": )", spec.alpha, R"(, "target_modules": [)",
                      absl::StrJoin(quoted, ", "),
                      R"(], "bias": "none", "use_rslora": false, "use_dora": false, )"
                      R"("modules_to_save": null, "lora_dropout": 0.0, "inference_mode": true})");
  return absl::OkStatus();
}

}  // namespace adapterd::testing
