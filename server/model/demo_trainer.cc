#include "server/model/demo_trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>
#include <utility>

#include "absl/log/log.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/torch_call.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/model_config.h"

namespace adapterd::model {
namespace {

// The schedules, chosen for well under a minute of two idle cores. The
// bigram phase fits the embeddings and lm_head to the counts of the stream's
// token pairs (full batch); the base phase then trains every weight on
// windows of the stream.
TrainOptions BigramOptions(const DemoSchedule& s) {
  TrainOptions o;
  o.steps = s.bigram_steps;
  o.learning_rate = 2e-2;
  o.warmup_steps = 5;
  o.weight_decay = 0.01;
  o.workers = kDemoTrainingWorkers;
  o.label = "demo bigrams";
  return o;
}

TrainOptions BaseOptions(const DemoSchedule& s) {
  TrainOptions o;
  o.steps = s.base_steps;
  o.batch_size = 8;
  o.seq_len = 64;
  o.learning_rate = 2e-3;
  o.warmup_steps = 30;
  o.weight_decay = 0.01;
  o.seed = s.seed + 1;
  o.workers = kDemoTrainingWorkers;
  o.label = "demo model";
  return o;
}

TrainOptions LoraOptions(const DemoLoraSpec& spec, const DemoSchedule& s) {
  TrainOptions o;
  o.steps = s.lora_steps;
  o.batch_size = 8;
  o.seq_len = 64;
  o.learning_rate = 1e-2;
  o.warmup_steps = 20;
  o.seed = s.seed + spec.seed;
  o.workers = 1;
  o.label = absl::StrCat("demo LoRA r", spec.r);
  return o;
}

absl::StatusOr<ModelConfig> DemoConfig() { return ModelConfig::FromJson(std::string(DemoConfigJson()), "demo config.json"); }

// The initial weights: unit norms, normal(0, 0.02) matrices, except o_proj
// and down_proj, which start at zero: every layer then starts as the
// identity, and the model as a function of the current token alone.
std::vector<at::Tensor> InitialWeights(const ModelConfig& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<at::Tensor> out;
  const std::vector<std::string> names = LlamaTensorNames(c);
  const std::vector<std::vector<int64_t>> shapes = LlamaTensorShapes(c);
  for (size_t i = 0; i < shapes.size(); ++i) {
    const bool zero = absl::StrContains(names[i], "o_proj") || absl::StrContains(names[i], "down_proj");
    if (shapes[i].size() == 1) {
      out.push_back(at::ones(shapes[i], at::kFloat));
    } else if (zero) {
      out.push_back(at::zeros(shapes[i], at::kFloat));
    } else {
      out.push_back(at::normal(0.0, 0.02, shapes[i], gen, at::TensorOptions().dtype(at::kFloat)));
    }
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

// Fits the embeddings, the final norm and lm_head to the stream's bigram
// counts: with o_proj and down_proj at zero the layers add nothing, and
// this is the whole model's next-token loss, computed over every distinct
// current token at once. Rows are split among the workers.
absl::StatusOr<TrainReport> FitBigrams(const ModelConfig& c, std::span<const int32_t> tokens,
                                       const std::vector<at::Tensor>& w, const TrainOptions& o) {
  at::Tensor rows, counts;
  absl::Status st = TorchCall("demo bigrams", [&] {
    std::vector<int64_t> ids(tokens.begin(), tokens.end());
    at::Tensor all = at::tensor(at::ArrayRef<int64_t>(ids), at::kLong);
    const int64_t n = all.size(0) - 1;
    auto [unique, inverse, unused] = at::_unique2(all.narrow(0, 0, n), /*sorted=*/true, /*return_inverse=*/true);
    rows = unique;
    counts = at::zeros({unique.size(0), c.vocab_size}, at::kFloat);
    counts.index_put_({inverse, all.narrow(0, 1, n)}, at::ones({n}, at::kFloat), /*accumulate=*/true);
    counts.div_(static_cast<double>(n));
  });
  if (!st.ok()) return st;
  const size_t last = w.size() - 2;  // model.norm; lm_head follows
  std::vector<TrainParam> params = {{w[0], true}, {w[last], false}, {w[last + 1], true}};
  const int64_t per = (rows.size(0) + o.workers - 1) / o.workers;
  StepLoss loss = [&](int worker, int64_t, std::span<const at::Tensor> p) {
    const int64_t begin = std::min<int64_t>(worker * per, rows.size(0));
    const int64_t len = std::min<int64_t>(per, rows.size(0) - begin);
    at::Tensor x = at::embedding(p[0], rows.narrow(0, begin, len));
    x = p[1] * (x * at::rsqrt(x.pow(2).mean(-1, true) + c.rms_norm_eps));
    at::Tensor logp = at::log_softmax(at::linear(x, p[2]), -1);
    return -(counts.narrow(0, begin, len) * logp).sum() * static_cast<double>(o.workers);
  };
  return Minimize(params, loss, o);
}

}  // namespace

absl::StatusOr<NamedTensors> TrainDemoModel(std::span<const int32_t> tokens, const DemoSchedule& schedule,
                                            TrainReport* report) {
  absl::StatusOr<ModelConfig> config = DemoConfig();
  if (!config.ok()) return config.status();
  const ModelConfig& c = *config;
  absl::StatusOr<std::vector<at::Tensor>> init =
      TorchCall("demo model init", [&] { return InitialWeights(c, schedule.seed); });
  if (!init.ok()) return init.status();
  if (schedule.bigram_steps > 0) {
    absl::StatusOr<TrainReport> bigrams = FitBigrams(c, tokens, *init, BigramOptions(schedule));
    if (!bigrams.ok()) return bigrams.status();
    LOG(INFO) << "demo model: bigram loss " << bigrams->first_loss << " -> " << bigrams->final_loss << " in "
              << absl::FormatDuration(bigrams->time);
  }
  std::vector<TrainParam> params;
  for (const at::Tensor& t : *init) params.push_back(TrainParam{t, t.dim() == 2});
  BatchLoss loss = [&c](std::span<const at::Tensor> weights, const at::Tensor& ids) {
    absl::StatusOr<TrainableLlama> m = TrainableLlama::Create(c, {weights.begin(), weights.end()});
    TORCH_CHECK(m.ok(), std::string(m.status().message()));
    return m->NextTokenLoss(ids);
  };
  absl::StatusOr<TrainReport> r = TrainNextToken(tokens, params, loss, BaseOptions(schedule));
  if (!r.ok()) return r.status();
  if (report != nullptr) *report = *r;
  NamedTensors out;
  const std::vector<std::string> names = LlamaTensorNames(c);
  for (size_t i = 0; i < names.size(); ++i) out.emplace_back(names[i], (*init)[i]);
  return out;
}

absl::StatusOr<NamedTensors> TrainDemoLora(const NamedTensors& base, std::span<const int32_t> tokens,
                                           const DemoLoraSpec& spec, const DemoSchedule& schedule,
                                           TrainReport* report) {
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
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(schedule.seed + spec.seed);
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
  absl::StatusOr<TrainReport> r = TrainNextToken(tokens, params, loss, LoraOptions(spec, schedule));
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
