#include "adapters/bottleneck_config.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "adapters/peft_fields.h"

namespace adapterd::adapters {

std::optional<model::Activation> ParseActivation(const std::string& raw) {
  using A = model::Activation;
  const std::string n = absl::AsciiStrToLower(raw);
  if (n == "relu") return A::kRelu;
  if (n == "gelu") return A::kGelu;
  if (n == "gelu_new" || n == "gelu_pytorch_tanh" || n == "gelu_fast") return A::kGeluTanh;
  if (n == "swish" || n == "silu") return A::kSilu;
  if (n == "tanh") return A::kTanh;
  if (n == "sigmoid") return A::kSigmoid;
  if (n == "leakyrelu" || n == "leaky_relu") return A::kLeakyRelu;
  if (n == "linear") return A::kIdentity;
  return std::nullopt;
}

absl::StatusOr<BottleneckConfig> BottleneckConfig::FromJson(const std::string& text, const std::string& label) {
  OrderedJson doc = OrderedJson::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return ConfigError(label, "not a valid JSON object");
  auto cj = doc.find("config");
  if (cj == doc.end() || !cj->is_object()) return ConfigError(label, "'config' must be an object");
  const OrderedJson& j = *cj;
  BottleneckConfig c;
  auto name = doc.find("name");
  if (name == doc.end() || !name->is_string() || name->get<std::string>().empty()) {
    return ConfigError(label, "'name' must be a non-empty string (the adapter's name in its tensor keys)");
  }
  c.name = name->get<std::string>();
  if (auto h = doc.find("hidden_size"); h != doc.end() && !h->is_null()) {
    if (!h->is_number_integer()) return ConfigError(label, "'hidden_size' must be an integer");
    c.hidden_size = h->get<int64_t>();
  }
  if (auto a = j.find("architecture"); a != j.end() && !a->is_null() && *a != "bottleneck") {
    return ConfigError(label, absl::StrCat("'config.architecture' is ", a->dump(),
                                           "; only bottleneck adapters are supported from AdapterHub saves"));
  }
  if (IsSet(j, "use_gating")) {
    return ConfigError(label, "'config.use_gating' is not supported: its gate averages over the whole "
                              "sequence, which incremental decoding cannot reproduce");
  }
  for (const char* key : {"phm_layer", "inv_adapter", "cross_adapter"}) {
    if (IsSet(j, key)) return ConfigError(label, absl::StrCat("'config.", key, "' is not supported (", j[key].dump(), ")"));
  }
  auto boolean = [&](const char* key, bool* out) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_boolean()) return ConfigError(label, absl::StrCat("'config.", key, "' must be a boolean (it is ", it->dump(), ")"));
    *out = it->get<bool>();
    return absl::OkStatus();
  };
  if (auto r = j.find("residual_before_ln"); r != j.end() && r->is_string()) {
    return ConfigError(label, absl::StrCat("'config.residual_before_ln' ", r->dump(),
                                           " is not supported (Llama layers pass no layer norm to the adapter)"));
  }
  for (auto [key, dst] : {std::pair{"mh_adapter", &c.mh_adapter}, std::pair{"output_adapter", &c.output_adapter},
                          std::pair{"is_parallel", &c.is_parallel},
                          std::pair{"original_ln_before", &c.original_ln_before},
                          std::pair{"original_ln_after", &c.original_ln_after},
                          std::pair{"residual_before_ln", &c.residual_before_ln},
                          std::pair{"adapter_residual_before_ln", &c.adapter_residual_before_ln},
                          std::pair{"ln_before", &c.ln_before}, std::pair{"ln_after", &c.ln_after}}) {
    if (absl::Status s = boolean(key, dst); !s.ok()) return s;
  }
  if (auto nl = j.find("non_linearity"); nl != j.end() && !nl->is_null()) {
    if (!nl->is_string()) return ConfigError(label, "'config.non_linearity' must be a string");
    std::optional<model::Activation> act = ParseActivation(nl->get<std::string>());
    if (!act) {
      return ConfigError(label, absl::StrCat("'config.non_linearity' ", nl->dump(),
                                             " is not supported (relu, gelu, gelu_new, swish, silu, tanh, "
                                             "sigmoid, leakyrelu, linear)"));
    }
    c.act = *act;
    c.non_linearity = absl::AsciiStrToLower(nl->get<std::string>());
  }
  auto positive = [&](const OrderedJson& v, const std::string& what, double* out) -> absl::Status {
    if (!v.is_number() || v.get<double>() <= 0) return ConfigError(label, absl::StrCat("'", what, "' must be a positive number"));
    *out = v.get<double>();
    return absl::OkStatus();
  };
  if (auto rf = j.find("reduction_factor"); rf != j.end() && !rf->is_null()) {
    if (rf->is_object()) {
      bool has_default = false;
      for (const auto& [k, v] : rf->items()) {
        double val = 0;
        if (absl::Status s = positive(v, absl::StrCat("config.reduction_factor[", k, "]"), &val); !s.ok()) return s;
        int64_t layer = 0;
        if (k == "default") {
          c.reduction_factor = val;
          has_default = true;
        } else if (absl::SimpleAtoi(k, &layer) && layer >= 0) {
          c.reduction_per_layer[layer] = val;
        } else {
          return ConfigError(label, absl::StrCat("'config.reduction_factor' key '", k, "' is not a layer index or \"default\""));
        }
      }
      if (!has_default) {
        // The library needs a default unless every layer is listed; the loader checks the layers.
        c.reduction_factor = 0;
      }
    } else if (absl::Status s = positive(*rf, "config.reduction_factor", &c.reduction_factor); !s.ok()) {
      return s;
    }
  }
  if (auto sc = j.find("scaling"); sc != j.end() && !sc->is_null()) {
    if (sc->is_string() && (*sc == "learned" || *sc == "channel")) {
      c.scaling_kind = sc->get<std::string>();
    } else if (sc->is_number_float()) {
      c.scaling = sc->get<double>();
    } else {
      return ConfigError(label, absl::StrCat("'config.scaling' ", sc->dump(),
                                             " is not supported (a float, \"learned\" or \"channel\")"));
    }
  }
  if (auto lo = j.find("leave_out"); lo != j.end() && !lo->is_null()) {
    if (!lo->is_array()) return ConfigError(label, "'config.leave_out' must be a list of layer indices");
    for (const OrderedJson& v : *lo) {
      if (!v.is_number_integer()) return ConfigError(label, "'config.leave_out' must hold integers");
      c.leave_out.push_back(v.get<int64_t>());
    }
  }
  if (!c.mh_adapter && !c.output_adapter) {
    return ConfigError(label, "neither 'config.mh_adapter' nor 'config.output_adapter' is set: the adapter has no module");
  }
  return c;
}

bool BottleneckConfig::Placed(int64_t layer, model::BottleneckLocation loc) const {
  if (std::find(leave_out.begin(), leave_out.end(), layer) != leave_out.end()) return false;
  return loc == model::BottleneckLocation::kAttention ? mh_adapter : output_adapter;
}

int64_t BottleneckConfig::Width(int64_t layer, int64_t hidden) const {
  auto it = reduction_per_layer.find(layer);
  const double rf = it != reduction_per_layer.end() ? it->second : reduction_factor;
  if (rf <= 0) return 0;
  // Clamped before the cast (a tiny factor would overflow int64); a width
  // that large then fails the shape checks against the tensors.
  const double width = std::min(std::floor(static_cast<double>(hidden) / rf), 1e12);
  return std::max<int64_t>(1, static_cast<int64_t>(width));
}

}  // namespace adapterd::adapters
