#include "server/model/composed_lease.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace adapterd::model {
namespace {

const char* KindName(AdapterKind k) {
  switch (k) {
    case AdapterKind::kLora: return "LoRA";
    case AdapterKind::kIa3: return "IA3";
    case AdapterKind::kBottleneck: return "bottleneck";
    case AdapterKind::kPromptTuning: return "prompt-tuning";
  }
  return "non-LoRA";
}

absl::Status NotComposable(const std::string& id, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("adapter '", id, "' ", why, "; only plain LoRA adapters can be composed"));
}

// What a LoRA adapter brings besides low-rank deltas on the projections;
// nullptr when nothing.
const char* ExtraOf(const AdapterWeights& w) {
  if (w.is_classifier()) return "is a sequence-classification adapter";
  if (w.ChangesEmbedding()) return "changes the input embedding (modules_to_save, trainable tokens or LoRA on embed_tokens)";
  if (w.lm_head().defined() || !w.head_token_rows().empty()) return "replaces LM head rows (modules_to_save or trainable tokens)";
  for (int64_t l = 0; l < w.num_layers(); ++l) {
    for (int p = 0; p < kNumProj; ++p) {
      const Proj proj = static_cast<Proj>(p);
      const LoraModule* m = w.Find(l, proj);
      if (m != nullptr && m->dora_scale.defined()) {
        return "uses DoRA, whose magnitude rescaling is not linear in the delta";
      }
      if (w.FindBiasDelta(l, proj) != nullptr) return "trains biases (bias or lora_bias)";
      if (w.FindIa3(l, proj) != nullptr) return "holds IA3 vectors";
    }
    for (int loc = 0; loc < kNumBottleneckLocations; ++loc) {
      if (w.FindBottleneck(l, static_cast<BottleneckLocation>(loc)) != nullptr) return "holds bottleneck modules";
    }
  }
  return nullptr;
}

}  // namespace

absl::Status CheckComposable(const std::string& id, const AdapterWeights& w) {
  if (w.kind() != AdapterKind::kLora) return NotComposable(id, absl::StrCat("is a ", KindName(w.kind()), " adapter"));
  if (w.composed()) return NotComposable(id, "is itself a composition");
  if (w.num_virtual_tokens() > 0) return NotComposable(id, "has virtual tokens");
  if (const char* extra = ExtraOf(w); extra != nullptr) return NotComposable(id, extra);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const AdapterWeights>> ComposeLora(std::span<const WeightedWeights> parts) {
  if (parts.empty()) return absl::InvalidArgumentError("a composition needs at least one adapter");
  const int64_t layers = parts.front().weights->num_layers();
  for (const WeightedWeights& part : parts) {
    if (!std::isfinite(part.weight)) {
      return absl::InvalidArgumentError(absl::StrCat("the weight of adapter '", part.id, "' is not finite: ", part.weight));
    }
    if (absl::Status st = CheckComposable(part.id, *part.weights); !st.ok()) return st;
    if (part.weights->num_layers() != layers) {
      return absl::InvalidArgumentError(absl::StrCat("adapter '", part.id, "' has ", part.weights->num_layers(),
                                                     " layers, not ", layers));
    }
  }
  auto composite = std::make_shared<AdapterWeights>(layers, AdapterKind::kLora);
  for (int64_t l = 0; l < layers; ++l) {
    for (int p = 0; p < kNumProj; ++p) {
      const Proj proj = static_cast<Proj>(p);
      for (const WeightedWeights& part : parts) {
        const LoraModule* m = part.weights->Find(l, proj);
        if (m == nullptr) continue;
        LoraModule view = *m;  // at::Tensor copies share storage
        view.scale = m->scale * part.weight;
        if (!std::isfinite(static_cast<float>(view.scale))) {
          return absl::InvalidArgumentError(absl::StrCat("adapter '", part.id, "' at weight ", part.weight,
                                                         " scales its delta beyond float32's range"));
        }
        composite->AddComposed(l, proj, std::move(view));
      }
    }
  }
  return std::shared_ptr<const AdapterWeights>(std::move(composite));
}

ComposedLease::ComposedLease(std::vector<WeightedLease> components)
    : components_(std::move(components)), pending_(components_.size()) {}

std::shared_ptr<ComposedLease> ComposedLease::Create(std::vector<WeightedLease> components) {
  auto lease = std::make_shared<ComposedLease>(std::move(components));
  const std::weak_ptr<ComposedLease> weak = lease;
  // A component that has already settled calls back at once, on this thread.
  for (const WeightedLease& c : lease->components_) {
    c.lease->NotifyWhenSettled([weak] {
      if (std::shared_ptr<ComposedLease> self = weak.lock()) self->ComponentSettled();
    });
  }
  return lease;
}

absl::StatusOr<const AdapterWeights*> ComposedLease::weights() const {
  if (!ready_.load(std::memory_order_acquire)) return nullptr;
  if (!error_.ok()) return error_;
  return composite_.get();
}

void ComposedLease::NotifyWhenSettled(absl::AnyInvocable<void()> settled) {
  {
    absl::MutexLock lock(&mu_);
    if (notify_registered_) return;
    notify_registered_ = true;
    if (!settled_) {
      on_settled_ = std::move(settled);
      return;
    }
  }
  settled();
}

absl::StatusOr<std::shared_ptr<const AdapterWeights>> ComposedLease::Build() const {
  std::vector<WeightedWeights> parts;
  parts.reserve(components_.size());
  for (const WeightedLease& c : components_) {
    absl::StatusOr<const AdapterWeights*> w = c.lease->weights();
    if (!w.ok()) return w.status();
    if (*w == nullptr) return absl::InternalError(absl::StrCat("adapter '", c.lease->adapter_id(), "' has not settled"));
    parts.push_back({c.lease->adapter_id(), *w, c.weight});
  }
  return ComposeLora(parts);
}

void ComposedLease::ComponentSettled() {
  {
    absl::MutexLock lock(&mu_);
    if (pending_ == 0 || --pending_ > 0) return;
  }
  absl::StatusOr<std::shared_ptr<const AdapterWeights>> built = Build();
  if (built.ok()) {
    composite_ = *std::move(built);
  } else {
    error_ = built.status();
  }
  ready_.store(true, std::memory_order_release);
  absl::AnyInvocable<void()> callback;
  {
    absl::MutexLock lock(&mu_);
    settled_ = true;
    callback = std::move(on_settled_);
  }
  if (callback) callback();
}

}  // namespace adapterd::model
