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

// A list of strings under `key`; null or absent leaves `out` empty.
absl::Status StringList(const json& j, const char* key, const std::string& label, std::vector<std::string>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {  // PEFT accepts one name
    out->push_back(it->get<std::string>());
    return absl::OkStatus();
  }
  if (!it->is_array()) return Bad(label, absl::StrCat("'", key, "' must be a list of module names"));
  for (const json& v : *it) {
    if (!v.is_string()) return Bad(label, absl::StrCat("'", key, "' must hold strings"));
    out->push_back(v.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status TokenIds(const json& v, const std::string& label, const std::string& what, std::vector<int64_t>* out) {
  if (!v.is_array() || v.empty()) return Bad(label, absl::StrCat("'", what, "' must be a non-empty list of token ids"));
  for (const json& id : v) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return Bad(label, absl::StrCat("'", what, "' holds ", id.dump(), ", not a token id (a non-negative integer)"));
    }
    out->push_back(id.get<int64_t>());
  }
  return absl::OkStatus();
}

// task_type, bias, lora_bias, modules_to_save and trainable_token_indices.
absl::Status ParseModuleExtras(const json& j, const std::string& label, LoraConfig& c) {
  if (auto t = j.find("task_type"); t != j.end() && !t->is_null()) {
    if (!t->is_string()) return Bad(label, "'task_type' must be a string");
    c.task_type = t->get<std::string>();
    for (const char* headed : {"TOKEN_CLS", "QUESTION_ANS", "SEQ_2_SEQ_LM"}) {
      if (c.task_type == headed) {
        return Bad(label, absl::StrCat("'task_type' ", headed,
                                       " is not supported (CAUSAL_LM, SEQ_CLS and FEATURE_EXTRACTION are)"));
      }
    }
  }
  if (auto b = j.find("bias"); b != j.end() && !b->is_null()) {
    if (*b != "none" && *b != "all" && *b != "lora_only") {
      return Bad(label, absl::StrCat("'bias': ", b->dump(), " is not one of \"none\", \"all\", \"lora_only\""));
    }
    c.bias = b->get<std::string>();
  }
  if (auto lb = j.find("lora_bias"); lb != j.end() && !lb->is_null()) {
    if (!lb->is_boolean()) return Bad(label, "'lora_bias' must be a boolean");
    c.lora_bias = lb->get<bool>();
  }
  if (absl::Status s = StringList(j, "modules_to_save", label, &c.modules_to_save); !s.ok()) return s;
  auto tt = j.find("trainable_token_indices");
  if (tt == j.end() || tt->is_null()) return absl::OkStatus();
  if (tt->is_array()) {
    c.trainable_tokens.emplace_back("embed_tokens", std::vector<int64_t>{});
    return TokenIds(*tt, label, "trainable_token_indices", &c.trainable_tokens.back().second);
  }
  if (!tt->is_object()) return Bad(label, "'trainable_token_indices' must be a list of token ids or an object");
  for (const auto& [module, ids] : tt->items()) {
    c.trainable_tokens.emplace_back(module, std::vector<int64_t>{});
    if (absl::Status s = TokenIds(ids, label, absl::StrCat("trainable_token_indices[", module.substr(0, 64), "]"),
                                  &c.trainable_tokens.back().second);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

// AdaLoRA's init_r and its rank_pattern: {"<module>.lora_E": [kept?] * init_r}.
absl::Status ParseAdaLora(const json& j, const std::string& label, LoraConfig& c) {
  if (auto r = j.find("init_r"); r != j.end() && !r->is_null()) {
    if (!r->is_number_integer() || r->get<int64_t>() < 1 || r->get<int64_t>() > kMaxRank) {
      return Bad(label, absl::StrCat("'init_r' must be a positive integer no larger than ", kMaxRank));
    }
    c.init_r = r->get<int64_t>();
  }
  if (c.use_dora || c.lora_bias) return Bad(label, "AdaLoRA does not take 'use_dora' or 'lora_bias'");
  auto rp = j.find("rank_pattern");
  if (rp == j.end() || rp->is_null()) return absl::OkStatus();
  if (!rp->is_object()) return Bad(label, "'rank_pattern' must be an object");
  constexpr absl::string_view kSuffix = ".lora_E";
  for (const auto& [key, mask] : rp->items()) {
    const std::string what = absl::StrCat("rank_pattern[", key.substr(0, 96), "]");
    if (!absl::EndsWith(key, kSuffix)) return Bad(label, absl::StrCat("'", what, "' must name a module's lora_E"));
    if (!mask.is_array() || static_cast<int64_t>(mask.size()) != c.init_r) {
      return Bad(label, absl::StrCat("'", what, "' must be a list of init_r (", c.init_r, ") booleans"));
    }
    int64_t kept = 0;
    for (const json& m : mask) {
      if (!m.is_boolean()) return Bad(label, absl::StrCat("'", what, "' must hold booleans"));
      kept += m.get<bool>() ? 1 : 0;
    }
    c.adalora_ranks.emplace_back(key.substr(0, key.size() - kSuffix.size()), kept);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LoraConfig> LoraConfig::FromJson(const std::string& text, const std::string& label) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad(label, "not a valid JSON object");
  LoraConfig c;
  if (auto t = j.find("peft_type"); t != j.end() && !t->is_null()) {
    if (!t->is_string() || (*t != "LORA" && *t != "ADALORA")) {
      return Bad(label, absl::StrCat("'peft_type' is ", t->dump(), "; only LORA and ADALORA are supported"));
    }
    c.adalora = *t == "ADALORA";
  }
  // Known keys that change the math in ways adapterd does not implement.
  for (const char* key : {"layer_replication", "target_parameters", "use_qalora", "alora_invocation_tokens",
                          "megatron_config"}) {
    if (IsSet(j, key)) {
      return Bad(label, absl::StrCat("'", key, "' is not supported (", j[key].dump(), ")"));
    }
  }
  if (absl::Status s = ParseModuleExtras(j, label, c); !s.ok()) return s;
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
  if (c.adalora) {
    if (absl::Status s = ParseAdaLora(j, label, c); !s.ok()) return s;
  }
  for (auto [key, is_rank] : {std::pair{"rank_pattern", true}, std::pair{"alpha_pattern", false}}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null() || (c.adalora && is_rank)) continue;
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
  if (adalora) {
    for (const auto& [module, kept] : adalora_ranks) {
      if (module == name) return kept;
    }
    return init_r;
  }
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
  if (adalora) {
    const double scaling = lora_alpha > 0 ? lora_alpha : static_cast<double>(init_r);
    return scaling / (static_cast<double>(init_r) + 1e-5);
  }
  const double rank = static_cast<double>(RankFor(name));
  return use_rslora ? AlphaFor(name) / std::sqrt(rank) : AlphaFor(name) / rank;
}

}  // namespace adapterd::adapters
