// AdapterHub `adapters` bottleneck adapter configs (seq_bn / Pfeiffer,
// double_seq_bn / Houlsby, par_bn / parallel) as save_adapter() writes them.
#ifndef ADAPTERD_ADAPTERS_BOTTLENECK_CONFIG_H_
#define ADAPTERD_ADAPTERS_BOTTLENECK_CONFIG_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/adapter_weights.h"

namespace adapterd::adapters {

// The keys that change the math. Keys for training only (dropout,
// init_weights, stochastic_depth, ...) are ignored; options adapterd does not
// implement (use_gating, phm_layer, inv_adapter, cross_adapter,
// residual_before_ln "post_add", other architectures) are rejected by name.
// A plain value; thread-compatible.
struct BottleneckConfig {
  std::string name;          // the adapter's name inside the tensor keys
  int64_t hidden_size = 0;   // of the model it was saved from
  double reduction_factor = 16;
  std::map<int64_t, double> reduction_per_layer;  // from a {"<layer>": rf, "default": rf} map
  model::Activation act = model::Activation::kRelu;
  std::string non_linearity = "relu";
  bool mh_adapter = false;
  bool output_adapter = true;
  bool is_parallel = false;
  bool original_ln_before = true;
  bool original_ln_after = true;
  bool residual_before_ln = true;
  bool adapter_residual_before_ln = false;
  bool ln_before = false;
  bool ln_after = false;
  double scaling = 1.0;
  std::string scaling_kind = "float";  // "float", "learned" ([1]) or "channel" ([hidden])
  std::vector<int64_t> leave_out;

  // Parses the file's text; `label` names it in errors.
  static absl::StatusOr<BottleneckConfig> FromJson(const std::string& json_text, const std::string& label);

  // Whether an adapter module sits at `loc` of `layer`.
  bool Placed(int64_t layer, model::BottleneckLocation loc) const;
  // The bottleneck width at `layer` for a model of hidden size `hidden`:
  // floor(hidden / reduction factor), at least 1, as the library computes it.
  int64_t Width(int64_t layer, int64_t hidden) const;
};

// Maps a non_linearity name (lower-cased, as the library does) to the
// activation, or nullopt for names adapterd does not implement.
std::optional<model::Activation> ParseActivation(const std::string& name);

}  // namespace adapterd::adapters

#endif  // ADAPTERD_ADAPTERS_BOTTLENECK_CONFIG_H_
