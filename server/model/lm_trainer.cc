#include "server/model/lm_trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <numbers>
#include <random>
#include <thread>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/common/torch_call.h"

namespace adapterd::model {
namespace {

double LearningRate(const TrainOptions& o, int64_t step) {
  if (step < o.warmup_steps) return o.learning_rate * static_cast<double>(step + 1) / o.warmup_steps;
  const double span = std::max<int64_t>(1, o.steps - o.warmup_steps - 1);
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / span);
  const double cosine = 0.5 * (1 + std::cos(std::numbers::pi * progress));
  return o.learning_rate * (o.final_lr_fraction + (1 - o.final_lr_fraction) * cosine);
}

// AdamW's moments for every parameter.
class AdamW {
 public:
  AdamW(std::span<const TrainParam> params, const TrainOptions& o) : params_(params), o_(o) {
    for (const TrainParam& p : params) {
      m_.push_back(at::zeros_like(p.tensor));
      v_.push_back(at::zeros_like(p.tensor));
    }
  }

  // One update with `grads` (same order as the parameters; undefined = 0).
  void Step(const std::vector<at::Tensor>& grads, double lr) {
    ++t_;
    const double bc1 = 1 - std::pow(o_.beta1, static_cast<double>(t_));
    const double bc2 = 1 - std::pow(o_.beta2, static_cast<double>(t_));
    for (size_t i = 0; i < params_.size(); ++i) {
      at::Tensor p = params_[i].tensor;
      if (params_[i].decay && o_.weight_decay > 0) p.mul_(1 - lr * o_.weight_decay);
      if (!grads[i].defined()) continue;
      m_[i].mul_(o_.beta1).add_(grads[i], 1 - o_.beta1);
      v_[i].mul_(o_.beta2).addcmul_(grads[i], grads[i], 1 - o_.beta2);
      at::Tensor denom = (v_[i].sqrt() / std::sqrt(bc2)).add_(o_.epsilon);
      p.addcdiv_(m_[i], denom, -lr / bc1);
    }
  }

 private:
  std::span<const TrainParam> params_;
  const TrainOptions& o_;
  std::vector<at::Tensor> m_, v_;
  int64_t t_ = 0;
};

// Sums the workers' gradients into the first worker's, scaled to the mean,
// clipped to max_grad_norm, and clears the others.
std::vector<at::Tensor> ReduceGradients(std::vector<std::vector<at::Tensor>>& workers, double max_norm) {
  const size_t n = workers[0].size();
  std::vector<at::Tensor> grads(n);
  double sq = 0;
  for (size_t i = 0; i < n; ++i) {
    for (auto& w : workers) {
      at::Tensor& g = w[i].mutable_grad();
      if (!g.defined()) continue;
      if (!grads[i].defined()) {
        grads[i] = g;
      } else {
        grads[i].add_(g);
      }
      g = at::Tensor();
    }
    if (grads[i].defined()) {
      grads[i].div_(static_cast<double>(workers.size()));
      sq += grads[i].pow(2).sum().item<double>();
    }
  }
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    for (at::Tensor& g : grads) {
      if (g.defined()) g.mul_(max_norm / norm);
    }
  }
  return grads;
}

}  // namespace

absl::StatusOr<TrainReport> Minimize(std::span<const TrainParam> params, const StepLoss& loss, const TrainOptions& o) {
  if (o.workers < 1 || o.steps < 1 || o.warmup_steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.label, ": workers, steps and warmup_steps must be positive"));
  }
  for (const TrainParam& p : params) {
    if (!p.tensor.defined() || p.tensor.requires_grad()) {
      return absl::InvalidArgumentError(absl::StrCat(o.label, ": parameters must be defined and not require grad"));
    }
  }
  const absl::Time start = absl::Now();
  TrainReport report;
  absl::Status st = TorchCall(o.label, [&]() -> absl::Status {
    std::vector<std::vector<at::Tensor>> aliases(o.workers);
    for (auto& w : aliases) {
      for (const TrainParam& p : params) w.push_back(p.tensor.detach().requires_grad_(true));
    }
    AdamW adam(params, o);
    double tail_sum = 0;
    int64_t tail_n = 0;
    for (int64_t step = 0; step < o.steps; ++step) {
      std::vector<double> losses(o.workers, 0);
      std::vector<absl::Status> errors(o.workers);
      auto run = [&](int w) {
        errors[w] = TorchCall(o.label, [&] {
          at::Tensor l = loss(w, step, aliases[w]);
          l.backward();
          losses[w] = l.item<double>();
        });
      };
      std::vector<std::thread> threads;
      for (int w = 1; w < o.workers; ++w) threads.emplace_back(run, w);
      run(0);
      for (std::thread& t : threads) t.join();
      for (const absl::Status& e : errors) {
        if (!e.ok()) return e;
      }
      double mean = 0;
      for (double l : losses) mean += l / o.workers;
      if (step == 0) report.first_loss = mean;
      if (step >= o.steps - std::max<int64_t>(1, o.steps / 10)) {
        tail_sum += mean;
        ++tail_n;
      }
      at::NoGradGuard no_grad;
      adam.Step(ReduceGradients(aliases, o.max_grad_norm), LearningRate(o, step));
      if ((step + 1) % 100 == 0 || step + 1 == o.steps) {
        LOG(INFO) << o.label << ": step " << step + 1 << "/" << o.steps << ", loss " << mean;
      }
    }
    report.final_loss = tail_sum / static_cast<double>(tail_n);
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  report.time = absl::Now() - start;
  return report;
}

absl::StatusOr<TrainReport> TrainNextToken(std::span<const int32_t> tokens, std::span<const TrainParam> params,
                                           const BatchLoss& loss, const TrainOptions& o) {
  const int64_t window = o.seq_len + 1;
  if (o.seq_len < 1 || static_cast<int64_t>(tokens.size()) < window) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.label, ": ", tokens.size(), " tokens are fewer than one sequence of ", window));
  }
  if (o.workers < 1 || o.batch_size < o.workers || o.batch_size % o.workers != 0) {
    return absl::InvalidArgumentError(absl::StrCat(o.label, ": batch_size (", o.batch_size,
                                                   ") must be a positive multiple of workers (", o.workers, ")"));
  }
  // Every window's start, drawn up front in (step, worker, row) order.
  std::mt19937_64 rng(o.seed);
  const uint64_t starts = tokens.size() - window + 1;
  std::vector<int64_t> firsts(static_cast<size_t>(std::max<int64_t>(0, o.steps) * o.batch_size));
  for (int64_t& f : firsts) f = static_cast<int64_t>(rng() % starts);
  const int64_t per_worker = o.batch_size / o.workers;
  std::vector<int64_t> ids64(tokens.begin(), tokens.end());
  at::Tensor stream, offsets;
  absl::Status st = TorchCall(o.label, [&] {
    stream = at::tensor(at::ArrayRef<int64_t>(ids64), at::kLong);
    offsets = at::arange(window, at::kLong);
  });
  if (!st.ok()) return st;
  StepLoss step_loss = [&](int worker, int64_t step, std::span<const at::Tensor> p) {
    const int64_t* first = firsts.data() + step * o.batch_size + worker * per_worker;
    at::Tensor index =
        at::tensor(at::ArrayRef<int64_t>(first, static_cast<size_t>(per_worker)), at::kLong).unsqueeze(1) + offsets;
    return loss(p, stream.index_select(0, index.reshape({-1})).view({per_worker, window}));
  };
  absl::StatusOr<TrainReport> report = Minimize(params, step_loss, o);
  if (report.ok()) report->tokens = o.steps * o.batch_size * o.seq_len;
  return report;
}

}  // namespace adapterd::model
