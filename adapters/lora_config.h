// PEFT's adapter_config.json for LoRA (and DoRA, and AdaLoRA) adapters.
#ifndef ADAPTERD_ADAPTERS_LORA_CONFIG_H_
#define ADAPTERD_ADAPTERS_LORA_CONFIG_H_

#include <cstdint>
#include <utility>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace adapterd::adapters {

// The keys of a PEFT LoRA or AdaLoRA config that change the math. Unknown
// keys are ignored; known keys whose feature adapterd does not implement are
// rejected by name. Whether the modules, tensors and token ids it names fit
// the base is the loader's to check. A plain value; thread-compatible.
struct LoraConfig {
  // peft_type ADALORA: modules were created with rank init_r and pruned by
  // rank allocation; `r` is not used.
  bool adalora = false;
  int64_t init_r = 12;
  // AdaLoRA's rank_pattern: the ranks kept per module name, in file order.
  std::vector<std::pair<std::string, int64_t>> adalora_ranks;
  // "SEQ_CLS" adapters bring a classification head; "" when not given.
  std::string task_type;
  // "none", "all" or "lora_only": which trained biases the save holds.
  std::string bias = "none";
  bool lora_bias = false;  // lora_B carries a bias
  std::vector<std::string> modules_to_save;  // as written
  // trainable_token_indices: the module ("embed_tokens" for the list form)
  // and its token ids, as written.
  std::vector<std::pair<std::string, std::vector<int64_t>>> trainable_tokens;
  int64_t r = 8;
  double lora_alpha = 8;
  bool use_rslora = false;
  bool use_dora = false;
  bool fan_in_fan_out = false;
  // Exactly one of these describes the targets.
  std::vector<std::string> target_modules;  // names matched as module-name suffixes
  std::optional<std::string> target_regex;  // a full-match regular expression
  bool all_linear = false;
  std::vector<std::string> exclude_modules;
  std::optional<std::string> exclude_regex;
  std::vector<int64_t> layers_to_transform;  // empty = all layers
  // In the file's order: the first matching key wins, as in PEFT.
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;

  // Parses adapter_config.json text; `label` names the file in errors.
  static absl::StatusOr<LoraConfig> FromJson(const std::string& json_text, const std::string& label);

  // Whether PEFT would put a LoRA module on `module_name` (e.g.
  // "model.layers.3.self_attn.q_proj") of layer `layer`.
  bool Targets(const std::string& module_name, int64_t layer) const;
  // Rank and alpha of a module after rank_pattern / alpha_pattern.
  int64_t RankFor(const std::string& module_name) const;
  double AlphaFor(const std::string& module_name) const;
  // lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA.
  double ScaleFor(const std::string& module_name) const;
};

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_LORA_CONFIG_H_
