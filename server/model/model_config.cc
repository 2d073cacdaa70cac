#include "server/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"

namespace adapterd::model {
namespace {

using json = nlohmann::json;

absl::Status Bad(const std::string& label, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(label, ": ", what));
}

// Reads an integer key; `required` keys must be present.
absl::Status GetInt(const json& j, const char* key, const std::string& label, bool required,
                    int64_t min_value, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return Bad(label, absl::StrCat("missing required key '", key, "'"));
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) return Bad(label, absl::StrCat("'", key, "' must be an integer"));
  int64_t v = it->get<int64_t>();
  if (v < min_value) return Bad(label, absl::StrCat("'", key, "' must be >= ", min_value, ", got ", v));
  *out = v;
  return absl::OkStatus();
}

absl::Status GetDouble(const json& j, const char* key, const std::string& label, double* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Bad(label, absl::StrCat("'", key, "' must be a number"));
  double v = it->get<double>();
  if (!std::isfinite(v)) return Bad(label, absl::StrCat("'", key, "' must be finite"));
  *out = v;
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, const char* key, const std::string& label, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return Bad(label, absl::StrCat("'", key, "' must be a boolean"));
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status AppendTokenIds(const json& j, const char* key, const std::string& label,
                            std::vector<int64_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  auto add = [&](const json& v) -> absl::Status {
    if (!v.is_number_integer() || v.get<int64_t>() < 0) {
      return Bad(label, absl::StrCat("'", key, "' must hold non-negative integers"));
    }
    int64_t id = v.get<int64_t>();
    if (std::find(out->begin(), out->end(), id) == out->end()) out->push_back(id);
    return absl::OkStatus();
  };
  if (it->is_array()) {
    for (const auto& v : *it) {
      if (absl::Status s = add(v); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  return add(*it);
}

// transformers 4.x writes rope_theta + rope_scaling; 5.x writes rope_parameters.
absl::Status ParseRope(const json& j, const std::string& label, RopeConfig* rope) {
  if (absl::Status s = GetDouble(j, "rope_theta", label, &rope->theta); !s.ok()) return s;
  const json* scaling = nullptr;
  std::string key = "rope_scaling";
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) {
    scaling = &*it;
    key = "rope_parameters";
    if (absl::Status s = GetDouble(*it, "rope_theta", label, &rope->theta); !s.ok()) return s;
  } else if (auto it2 = j.find("rope_scaling"); it2 != j.end() && !it2->is_null()) {
    if (!it2->is_object()) return Bad(label, "'rope_scaling' must be an object or null");
    scaling = &*it2;
  }
  if (rope->theta <= 0) return Bad(label, "'rope_theta' must be positive");
  if (scaling == nullptr) return absl::OkStatus();
  std::string type = "default";
  for (const char* k : {"rope_type", "type"}) {
    if (auto it = scaling->find(k); it != scaling->end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  for (auto [k, dst] : {std::pair{"factor", &rope->factor},
                        std::pair{"low_freq_factor", &rope->low_freq_factor},
                        std::pair{"high_freq_factor", &rope->high_freq_factor}}) {
    if (absl::Status s = GetDouble(*scaling, k, label, dst); !s.ok()) return s;
  }
  if (absl::Status s = GetInt(*scaling, "original_max_position_embeddings", label, false, 1,
                              &rope->original_max_position_embeddings);
      !s.ok()) {
    return s;
  }
  if (type == "default") {
    rope->type = RopeConfig::Type::kDefault;
  } else if (type == "linear") {
    rope->type = RopeConfig::Type::kLinear;
  } else if (type == "llama3") {
    rope->type = RopeConfig::Type::kLlama3;
    if (rope->high_freq_factor <= rope->low_freq_factor) {
      return Bad(label, "llama3 rope scaling needs high_freq_factor > low_freq_factor");
    }
  } else {
    return Bad(label, absl::StrCat("'", key, "' type '", type,
                                   "' is not supported (supported: default, linear, llama3)"));
  }
  if (rope->factor <= 0) return Bad(label, absl::StrCat("'", key, ".factor' must be positive"));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) { return ReadFileToString(path); }

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const std::string& json_text,
                                                  const std::string& label) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(label, "not valid JSON");
  if (!j.is_object()) return Bad(label, "top level must be a JSON object");

  ModelConfig c;
  auto archs = j.find("architectures");
  if (archs == j.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    return Bad(label, "missing 'architectures' (e.g. [\"LlamaForCausalLM\"])");
  }
  c.architecture_name = (*archs)[0].get<std::string>();
  if (c.architecture_name == "LlamaForCausalLM") {
    c.architecture = Architecture::kLlama;
  } else if (c.architecture_name == "Qwen2ForCausalLM") {
    c.architecture = Architecture::kQwen2;
  } else {
    return Bad(label, absl::StrCat("architecture '", c.architecture_name,
                                   "' is not supported (supported: LlamaForCausalLM, "
                                   "Qwen2ForCausalLM)"));
  }

  absl::Status s;
  auto check = [&](absl::Status st) {
    if (s.ok() && !st.ok()) s = st;
  };
  check(GetInt(j, "vocab_size", label, true, 1, &c.vocab_size));
  check(GetInt(j, "hidden_size", label, true, 1, &c.hidden_size));
  check(GetInt(j, "intermediate_size", label, true, 1, &c.intermediate_size));
  check(GetInt(j, "num_hidden_layers", label, true, 1, &c.num_layers));
  check(GetInt(j, "num_attention_heads", label, true, 1, &c.num_heads));
  c.num_kv_heads = c.num_heads;
  check(GetInt(j, "num_key_value_heads", label, false, 1, &c.num_kv_heads));
  check(GetInt(j, "max_position_embeddings", label, true, 1, &c.max_position_embeddings));
  check(GetDouble(j, "rms_norm_eps", label, &c.rms_norm_eps));
  check(GetBool(j, "tie_word_embeddings", label, &c.tie_word_embeddings));
  if (!s.ok()) return s;
  const bool explicit_head_dim = j.contains("head_dim") && !j["head_dim"].is_null();
  if (c.hidden_size % c.num_heads != 0 && !explicit_head_dim) {
    return Bad(label, "hidden_size must be divisible by num_attention_heads");
  }
  c.head_dim = c.hidden_size / c.num_heads;
  check(GetInt(j, "head_dim", label, false, 1, &c.head_dim));
  if (c.head_dim % 2 != 0) check(Bad(label, "head_dim must be even for rotary embeddings"));
  if (c.num_heads % c.num_kv_heads != 0) {
    check(Bad(label, "num_attention_heads must be a multiple of num_key_value_heads"));
  }
  if (c.rms_norm_eps <= 0) check(Bad(label, "'rms_norm_eps' must be positive"));
  if (auto act = j.find("hidden_act"); act != j.end() && act->is_string() &&
                                       *act != "silu" && *act != "swish") {
    check(Bad(label, absl::StrCat("hidden_act '", act->get<std::string>(),
                                  "' is not supported (supported: silu)")));
  }
  if (c.architecture == Architecture::kLlama) {
    check(GetBool(j, "attention_bias", label, &c.attention_bias));
    c.o_proj_bias = c.attention_bias;
    check(GetBool(j, "mlp_bias", label, &c.mlp_bias));
  } else {
    c.attention_bias = true;  // Qwen2: q/k/v biased, o_proj not
    bool sliding = false;
    check(GetBool(j, "use_sliding_window", label, &sliding));
    if (sliding) check(Bad(label, "'use_sliding_window': true is not supported"));
  }
  check(ParseRope(j, label, &c.rope));
  check(AppendTokenIds(j, "eos_token_id", label, &c.eos_token_ids));
  if (auto pad = j.find("pad_token_id"); pad != j.end() && !pad->is_null()) {
    // Informational for the causal LM, so a value some configs carry (-1)
    // does not fail start-up: a negative id means none.
    if (pad->is_number_integer()) {
      c.pad_token_id = std::max<int64_t>(-1, pad->get<int64_t>());
    } else {
      check(Bad(label, "'pad_token_id' must be an integer"));
    }
  }
  if (!s.ok()) return s;
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromDirectory(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<ModelConfig> c = FromJson(*text, path);
  if (!c.ok()) return c;
  const std::string gen_path = (std::filesystem::path(dir) / "generation_config.json").string();
  if (std::filesystem::exists(gen_path)) {
    absl::StatusOr<std::string> gen = ReadFile(gen_path);
    if (!gen.ok()) return gen.status();
    json g = json::parse(*gen, nullptr, false);
    if (g.is_discarded() || !g.is_object()) return Bad(gen_path, "not a valid JSON object");
    if (absl::Status s = AppendTokenIds(g, "eos_token_id", gen_path, &c->eos_token_ids); !s.ok()) {
      return s;
    }
  }
  for (int64_t id : c->eos_token_ids) {
    if (id >= c->vocab_size) {
      return Bad(path, absl::StrCat("eos_token_id ", id, " is not below vocab_size ", c->vocab_size));
    }
  }
  return c;
}

int64_t ModelConfig::NumParameters() const {
  const int64_t q = num_heads * head_dim, kv = num_kv_heads * head_dim;
  int64_t per_layer = hidden_size * (q + 2 * kv) + q * hidden_size +
                      3 * hidden_size * intermediate_size + 2 * hidden_size;
  if (attention_bias) per_layer += q + 2 * kv;
  if (o_proj_bias) per_layer += hidden_size;
  if (mlp_bias) per_layer += 2 * intermediate_size + hidden_size;
  int64_t total = num_layers * per_layer + vocab_size * hidden_size + hidden_size;
  if (!tie_word_embeddings) total += vocab_size * hidden_size;
  return total;
}

}  // namespace adapterd::model
