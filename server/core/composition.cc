#include "server/core/composition.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/model/composed_lease.h"

namespace adapterd::core {

std::string NotComposableReason(const adapters::AdapterSummary& s) {
  if (s.type == "dora") return "uses DoRA, whose magnitude rescaling is not linear in the delta";
  if (s.type != "lora") return absl::StrCat("is of type ", s.type, ", not plain LoRA");
  if (s.classifier()) return "is a sequence-classification adapter (task_type SEQ_CLS)";
  if (!s.modules_to_save.empty()) {
    return absl::StrCat("replaces whole modules (modules_to_save: ", absl::StrJoin(s.modules_to_save, ", "), ")");
  }
  if (s.trainable_tokens > 0) return "replaces embedding rows (trainable tokens)";
  if (s.bias != "none" || s.lora_bias) return "trains biases (bias or lora_bias)";
  if (std::find(s.target_modules.begin(), s.target_modules.end(), "embed_tokens") != s.target_modules.end()) {
    return "has LoRA on embed_tokens";
  }
  return "";
}

absl::StatusOr<LeasedComposition> LeaseComposition(
    absl::FunctionRef<absl::StatusOr<std::shared_ptr<const adapters::Adapter>>(const std::string&)> lookup,
    std::span<const WeightedAdapter> adapters, int max_adapters) {
  if (static_cast<int64_t>(adapters.size()) > max_adapters) {
    return absl::InvalidArgumentError(absl::StrCat("adapters names ", adapters.size(),
                                                   " adapters; the limit (--max_adapters_per_request) is ",
                                                   max_adapters));
  }
  std::vector<std::shared_ptr<const adapters::Adapter>> found;
  for (size_t i = 0; i < adapters.size(); ++i) {
    const WeightedAdapter& a = adapters[i];
    const std::string field = absl::StrCat("adapters[", i, "]");
    if (a.id.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " has an empty adapter id"));
    // The kernels scale in float32: a weight beyond its range is infinite there.
    if (!std::isfinite(static_cast<float>(a.weight))) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".weight (adapter '", a.id, "') must be a finite float32 number, not ", a.weight));
    }
    absl::StatusOr<std::shared_ptr<const adapters::Adapter>> adapter = lookup(a.id);
    if (absl::IsNotFound(adapter.status())) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": adapter '", a.id, "' is not loaded"));
    }
    if (!adapter.ok()) {
      return absl::Status(adapter.status().code(), absl::StrCat(field, ": ", adapter.status().message()));
    }
    if (std::string why = NotComposableReason((*adapter)->summary()); !why.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": adapter '", a.id, "' ", why, "; only plain LoRA adapters can be composed"));
    }
    found.push_back(*std::move(adapter));
  }
  std::vector<model::WeightedLease> leases;
  leases.reserve(found.size());
  for (size_t i = 0; i < found.size(); ++i) leases.push_back({found[i]->Lease(), adapters[i].weight});
  return LeasedComposition{model::ComposedLease::Create(std::move(leases)), found.front()};
}

}  // namespace adapterd::core
