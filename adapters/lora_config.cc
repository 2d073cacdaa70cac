#include "adapters/lora_config.h"

#include <algorithm>
#include <cmath>
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "adapters/peft_fields.h"

namespace adapterd::adapters {
namespace {

using json = OrderedJson;

constexpr int64_t kMaxRank = 65536;

absl::Status Bad(const std::string& label, const std::string& what) { return ConfigError(label, what); }

// PEFT: a key applies when it equals the module name or `(.*\.)?(key)$` matches it.
bool PatternMatches(const std::string& key, const std::string& name) {
  if (key == name) return true;
  try {
    return std::regex_match(name, std::regex("(.*\\.)?(" + key + ")"));
  } catch (const std::regex_error&) {
    return false;
  }
}

}  // namespace

absl::StatusOr<LoraConfig> LoraConfig::FromJson(const std::string& text, const std::string& label) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad(label, "not a valid JSON object");
  LoraConfig c;
  if (auto t = j.find("peft_type"); t != j.end() && !t->is_null()) {
    if (!t->is_string() || (*t != "LORA")) {
      return Bad(label, absl::StrCat("'peft_type' is ", t->dump(), "; only LORA is supported"));
    }
  }
  // Known keys that change the math in ways adapterd does not implement.
  for (const char* key : {"modules_to_save", "lora_bias", "layer_replication", "target_parameters",
                          "use_qalora", "alora_invocation_tokens", "trainable_token_indices",
                          "megatron_config"}) {
    if (IsSet(j, key)) {
      return Bad(label, absl::StrCat("'", key, "' is not supported (", j[key].dump(), ")"));
    }
  }
  if (auto b = j.find("bias"); b != j.end() && !b->is_null() && *b != "none") {
    return Bad(label, absl::StrCat("'bias': ", b->dump(),
                                   " is not supported; only \"none\" (no trained biases)"));
  }
  auto num = [&](const char* key, double* out) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_number()) return Bad(label, absl::StrCat("'", key, "' must be a number"));
    *out = it->get<double>();
    return absl::OkStatus();
  };
  double r = static_cast<double>(c.r);
  if (absl::Status s = num("r", &r); !s.ok()) return s;
  // Bounded before the cast: a double past int64 would be undefined.
  if (r < 1 || r > kMaxRank || r != std::floor(r)) {
    return Bad(label, absl::StrCat("'r' must be a positive integer no larger than ", kMaxRank));
  }
  c.r = static_cast<int64_t>(r);
  c.lora_alpha = 8;  // PEFT's default
  if (absl::Status s = num("lora_alpha", &c.lora_alpha); !s.ok()) return s;
  for (auto [key, dst] : {std::pair{"use_rslora", &c.use_rslora}, std::pair{"use_dora", &c.use_dora},
                          std::pair{"fan_in_fan_out", &c.fan_in_fan_out}}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_boolean()) return Bad(label, absl::StrCat("'", key, "' must be a boolean"));
    *dst = it->get<bool>();
  }
  auto targets = j.find("target_modules");
  if (targets == j.end() || targets->is_null()) {
    c.target_modules = {"q_proj", "v_proj"};  // PEFT's default for Llama and Qwen2
  } else if (targets->is_string() &&
             absl::AsciiStrToLower(targets->get<std::string>()) == "all-linear") {
    c.all_linear = true;
  } else {
    ModuleSelector sel;
    if (absl::Status s = ParseSelector(*targets, label, "target_modules", &sel); !s.ok()) return s;
    c.target_modules = std::move(sel.names);
    c.target_regex = std::move(sel.regex);
  }
  if (auto ex = j.find("exclude_modules"); ex != j.end() && !ex->is_null()) {
    ModuleSelector sel;
    if (absl::Status s = ParseSelector(*ex, label, "exclude_modules", &sel); !s.ok()) return s;
    c.exclude_modules = std::move(sel.names);
    c.exclude_regex = std::move(sel.regex);
  }
  if (auto l = j.find("layers_to_transform"); l != j.end() && !l->is_null()) {
    if (l->is_number_integer()) {
      c.layers_to_transform.push_back(l->get<int64_t>());
    } else if (l->is_array()) {
      for (const json& v : *l) {
        if (!v.is_number_integer()) return Bad(label, "'layers_to_transform' must hold integers");
        c.layers_to_transform.push_back(v.get<int64_t>());
      }
    } else {
      return Bad(label, "'layers_to_transform' must be an integer or a list");
    }
  }
  if (auto p = j.find("layers_pattern"); p != j.end() && !p->is_null()) {
    const bool ok = (p->is_string() && *p == "layers") ||
                    (p->is_array() && p->size() == 1 && (*p)[0] == "layers");
    if (!ok) return Bad(label, absl::StrCat("'layers_pattern' ", p->dump(), " does not match this model's 'layers'"));
  }
  for (auto [key, is_rank] : {std::pair{"rank_pattern", true}, std::pair{"alpha_pattern", false}}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) return Bad(label, absl::StrCat("'", key, "' must be an object"));
    for (const auto& [k, v] : it->items()) {
      if (!v.is_number()) return Bad(label, absl::StrCat("'", key, "[", k, "]' must be a number"));
      if (absl::Status st = CheckPattern(k, label, absl::StrCat(key, "[", k.substr(0, 64), "]")); !st.ok()) {
        return st;
      }
      if (is_rank) {
        if (!v.is_number_integer() || v.get<double>() < 1 || v.get<double>() > kMaxRank) {
          return Bad(label, absl::StrCat("'rank_pattern[", k, "]' must be a positive integer no larger than ",
                                         kMaxRank));
        }
        c.rank_pattern.emplace_back(k, v.get<int64_t>());
      } else {
        c.alpha_pattern.emplace_back(k, v.get<double>());
      }
    }
  }
  return c;
}

bool LoraConfig::Targets(const std::string& name, int64_t layer) const {
  if (ModuleSelector{exclude_modules, exclude_regex}.Matches(name)) return false;
  if (target_regex) return ModuleSelector{{}, target_regex}.Matches(name);
  // all-linear: every projection of the decoder layers (still subject to
  // layers_to_transform, as PEFT expands it to a list first).
  if (!all_linear && !ModuleSelector{target_modules, std::nullopt}.Matches(name)) return false;
  if (layers_to_transform.empty()) return true;
  return std::find(layers_to_transform.begin(), layers_to_transform.end(), layer) !=
         layers_to_transform.end();
}

int64_t LoraConfig::RankFor(const std::string& name) const {
  for (const auto& [key, value] : rank_pattern) {
    if (PatternMatches(key, name)) return value;
  }
  return r;
}

double LoraConfig::AlphaFor(const std::string& name) const {
  for (const auto& [key, value] : alpha_pattern) {
    if (PatternMatches(key, name)) return value;
  }
  return lora_alpha;
}

double LoraConfig::ScaleFor(const std::string& name) const {
  const double rank = static_cast<double>(RankFor(name));
  return use_rslora ? AlphaFor(name) / std::sqrt(rank) : AlphaFor(name) / rank;
}

}  // namespace adapterd::adapters
