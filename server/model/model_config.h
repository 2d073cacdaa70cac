// The subset of a Hugging Face config.json that defines a Llama-family model.
#ifndef ADAPTERD_SERVER_MODEL_MODEL_CONFIG_H_
#define ADAPTERD_SERVER_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace adapterd::model {

enum class Architecture { kLlama, kQwen2 };

struct RopeConfig {
  enum class Type { kDefault, kLinear, kLlama3 };
  Type type = Type::kDefault;
  double theta = 10000.0;
  double factor = 1.0;
  // llama3 only.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// Immutable description of the base model; a plain value, thread-compatible.
struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // as written in config.json
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v (and o for Llama) carry biases
  bool o_proj_bias = false;
  bool mlp_bias = false;
  RopeConfig rope;
  std::vector<int64_t> eos_token_ids;  // config.json plus generation_config.json
  // config.json's pad_token_id; -1 when it has none (or a negative one).
  // Sequence classification pools at the last token that is not padding.
  int64_t pad_token_id = -1;

  // Parses config.json text; `label` names the file in error messages.
  static absl::StatusOr<ModelConfig> FromJson(const std::string& json_text,
                                              const std::string& label);
  // Reads <dir>/config.json and, when present, <dir>/generation_config.json.
  static absl::StatusOr<ModelConfig> FromDirectory(const std::string& dir);

  // Parameters in the checkpoint (embeddings counted once when tied).
  int64_t NumParameters() const;
};

}  // namespace adapterd::model

#endif  // ADAPTERD_SERVER_MODEL_MODEL_CONFIG_H_
