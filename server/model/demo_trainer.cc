#include "server/model/demo_trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/torch_call.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/model_config.h"

namespace adapterd::model {
namespace {

constexpr uint64_t kInitSeed = 20260115;

// The schedules, chosen for about a minute on one or two cores.
TrainOptions BaseOptions() {
  TrainOptions o;
  o.steps = 500;
  o.batch_size = 8;
  o.seq_len = 64;
  o.learning_rate = 3e-3;
  o.warmup_steps = 30;
  o.weight_decay = 0.01;
  o.seed = 1;
  o.workers = kDemoTrainingWorkers;
  o.label = "demo model";
  return o;
}

TrainOptions LoraOptions(const DemoLoraSpec& spec) {
  TrainOptions o;
  o.steps = 150;
  o.batch_size = 8;
  o.seq_len = 64;
  o.learning_rate = 1e-2;
  o.warmup_steps = 20;
  o.seed = spec.seed;
  o.workers = 1;
  o.label = absl::StrCat("demo LoRA r", spec.r);
  return o;
}

absl::StatusOr<ModelConfig> DemoConfig() { return ModelConfig::FromJson(std::string(DemoConfigJson()), "demo config.json"); }

// The initial weights: normal(0, 0.02) matrices, unit norms.
std::vector<at::Tensor> InitialWeights(const ModelConfig& c) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(kInitSeed);
  std::vector<at::Tensor> out;
  for (const std::vector<int64_t>& shape : LlamaTensorShapes(c)) {
    out.push_back(shape.size() == 1 ? at::ones(shape, at::kFloat)
                                    : at::normal(0.0, 0.02, shape, gen, at::TensorOptions().dtype(at::kFloat)));
  }
  return out;
}

std::pair<int64_t, int64_t> ProjShape(const ModelConfig& c, Proj p) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  switch (p) {
    case Proj::kQ: return {c.num_heads * c.head_dim, H};
    case Proj::kK:
    case Proj::kV: return {c.num_kv_heads * c.head_dim, H};
    case Proj::kO: return {H, c.num_heads * c.head_dim};
    case Proj::kGate:
    case Proj::kUp: return {I, H};
    case Proj::kDown: return {H, I};
  }
  return {H, H};
}

}  // namespace

absl::StatusOr<NamedTensors> TrainDemoModel(std::span<const int32_t> tokens, TrainReport* report) {
  absl::StatusOr<ModelConfig> config = DemoConfig();
  if (!config.ok()) return config.status();
  absl::StatusOr<std::vector<at::Tensor>> init = TorchCall("demo model init", [&] { return InitialWeights(*config); });
  if (!init.ok()) return init.status();
  std::vector<TrainParam> params;
  for (const at::Tensor& t : *init) params.push_back(TrainParam{t, t.dim() == 2});
  const ModelConfig& c = *config;
  BatchLoss loss = [&c](std::span<const at::Tensor> weights, const at::Tensor& ids) {
    absl::StatusOr<TrainableLlama> m = TrainableLlama::Create(c, {weights.begin(), weights.end()});
    TORCH_CHECK(m.ok(), std::string(m.status().message()));
    return m->NextTokenLoss(ids);
  };
  absl::StatusOr<TrainReport> r = TrainNextToken(tokens, params, loss, BaseOptions());
  if (!r.ok()) return r.status();
  if (report != nullptr) *report = *r;
  NamedTensors out;
  const std::vector<std::string> names = LlamaTensorNames(c);
  for (size_t i = 0; i < names.size(); ++i) out.emplace_back(names[i], (*init)[i]);
  return out;
}

absl::StatusOr<NamedTensors> TrainDemoLora(const NamedTensors& base, std::span<const int32_t> tokens,
                                           const DemoLoraSpec& spec, TrainReport* report) {
  absl::StatusOr<ModelConfig> config = DemoConfig();
  if (!config.ok()) return config.status();
  const ModelConfig& c = *config;
  std::vector<at::Tensor> weights;
  for (const auto& [name, t] : base) weights.push_back(t);
  absl::StatusOr<TrainableLlama> model = TrainableLlama::Create(c, std::move(weights));
  if (!model.ok()) return model.status();
  if (spec.r < 1 || spec.targets.empty()) return absl::InvalidArgumentError("a LoRA needs r >= 1 and targets");

  std::vector<LoraFactors> layout;  // which factor pair is which
  std::vector<TrainParam> params;
  absl::Status st = TorchCall("demo LoRA init", [&] {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(spec.seed);
    for (int64_t l = 0; l < c.num_layers; ++l) {
      for (Proj p : spec.targets) {
        const auto [out, in] = ProjShape(c, p);
        const double bound = 1.0 / std::sqrt(static_cast<double>(in));
        LoraFactors f{l, p, at::rand({spec.r, in}, gen, at::kFloat) * (2 * bound) - bound,
                      at::zeros({out, spec.r}, at::kFloat), spec.alpha / static_cast<double>(spec.r)};
        params.push_back(TrainParam{f.a, false});
        params.push_back(TrainParam{f.b, false});
        layout.push_back(std::move(f));
      }
    }
  });
  if (!st.ok()) return st;
  BatchLoss loss = [&](std::span<const at::Tensor> ab, const at::Tensor& ids) {
    std::vector<LoraFactors> factors = layout;
    for (size_t i = 0; i < factors.size(); ++i) {
      factors[i].a = ab[2 * i];
      factors[i].b = ab[2 * i + 1];
    }
    return model->NextTokenLoss(ids, factors);
  };
  absl::StatusOr<TrainReport> r = TrainNextToken(tokens, params, loss, LoraOptions(spec));
  if (!r.ok()) return r.status();
  if (report != nullptr) *report = *r;
  NamedTensors out;
  for (const LoraFactors& f : layout) {
    const std::string key =
        absl::StrCat("base_model.model.model.layers.", f.layer, ".", std::string(ProjPath(f.proj)));
    out.emplace_back(key + ".lora_A.weight", f.a);
    out.emplace_back(key + ".lora_B.weight", f.b);
  }
  return out;
}

}  // namespace adapterd::model
