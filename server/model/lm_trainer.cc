#include "server/model/lm_trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <functional>
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

// AdamW's moments for every parameter. Update may run for different
// parameters on different threads at once.
class AdamW {
 public:
  AdamW(std::span<const TrainParam> params, const TrainOptions& o) : params_(params), o_(o) {
    for (const TrainParam& p : params) {
      m_.push_back(at::zeros_like(p.tensor));
      v_.push_back(at::zeros_like(p.tensor));
    }
  }

  // Parameter i's update at step `t` (from 1) with its gradient `grad`
  // (undefined = 0) and learning rate `lr`.
  void Update(size_t i, int64_t t, const at::Tensor& grad, double lr) {
    at::Tensor p = params_[i].tensor;
    if (params_[i].decay && o_.weight_decay > 0) p.mul_(1 - lr * o_.weight_decay);
    if (!grad.defined()) return;
    const double bc1 = 1 - std::pow(o_.beta1, static_cast<double>(t));
    const double bc2 = 1 - std::pow(o_.beta2, static_cast<double>(t));
    m_[i].mul_(o_.beta1).add_(grad, 1 - o_.beta1);
    v_[i].mul_(o_.beta2).addcmul_(grad, grad, 1 - o_.beta2);
    at::Tensor denom = (v_[i].sqrt() / std::sqrt(bc2)).add_(o_.epsilon);
    p.addcdiv_(m_[i], denom, -lr / bc1);
  }

 private:
  std::span<const TrainParam> params_;
  const TrainOptions& o_;
  std::vector<at::Tensor> m_, v_;
};

// Runs fn(w) for every w in [0, n) on threads of their own (0 on this
// one), with autograd recording or not; returns the first error in w order.
absl::Status ForEachWorker(int n, const std::string& label, bool grad, const std::function<void(int)>& fn) {
  std::vector<absl::Status> errors(n);
  auto run = [&](int w) {
    errors[w] = TorchCall(label, [&] {
      at::AutoGradMode mode(grad);
      fn(w);
    });
  };
  std::vector<std::thread> threads;
  for (int w = 1; w < n; ++w) threads.emplace_back(run, w);
  run(0);
  for (std::thread& t : threads) t.join();
  for (const absl::Status& e : errors) {
    if (!e.ok()) return e;
  }
  return absl::OkStatus();
}

// The parameters each of `workers` threads updates: the largest first, each
// to the least loaded thread, so that the shares cost about the same.
std::vector<std::vector<size_t>> Shards(std::span<const TrainParam> params, int workers) {
  std::vector<size_t> order(params.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return params[a].tensor.numel() > params[b].tensor.numel(); });
  std::vector<std::vector<size_t>> shards(workers);
  std::vector<int64_t> load(workers, 0);
  for (size_t i : order) {
    const int w = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    shards[w].push_back(i);
    load[w] += params[i].tensor.numel();
  }
  return shards;
}

// The optimizer's half of a step, on the workers' threads: each sums its
// shard's gradients over the workers (in worker order) into the mean,
// clears theirs and squares the sum; then the global norm is clipped to
// max_grad_norm and each updates its shard. Deterministic: every
// parameter's arithmetic is the same whichever thread does it.
absl::Status OptimizerStep(std::vector<std::vector<at::Tensor>>& aliases,
                           const std::vector<std::vector<size_t>>& shards, AdamW& adam, int64_t t, double lr,
                           const TrainOptions& o) {
  const size_t n = aliases[0].size();
  std::vector<at::Tensor> grads(n);
  std::vector<double> squares(n, 0);
  absl::Status st = ForEachWorker(o.workers, o.label, false, [&](int w) {
    for (size_t i : shards[w]) {
      for (auto& worker : aliases) {
        at::Tensor& g = worker[i].mutable_grad();
        if (!g.defined()) continue;
        grads[i] = grads[i].defined() ? grads[i].add_(g) : g;
        g = at::Tensor();
      }
      if (!grads[i].defined()) continue;
      grads[i].div_(static_cast<double>(aliases.size()));
      squares[i] = grads[i].pow(2).sum().item<double>();
    }
  });
  if (!st.ok()) return st;
  double sq = 0;
  for (double s : squares) sq += s;
  const double norm = std::sqrt(sq);
  const double clip = o.max_grad_norm > 0 && norm > o.max_grad_norm ? o.max_grad_norm / norm : 1.0;
  return ForEachWorker(o.workers, o.label, false, [&](int w) {
    for (size_t i : shards[w]) {
      if (clip != 1.0 && grads[i].defined()) grads[i].mul_(clip);
      adam.Update(i, t, grads[i], lr);
    }
  });
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
    const std::vector<std::vector<size_t>> shards = Shards(params, o.workers);
    double tail_sum = 0;
    int64_t tail_n = 0;
    for (int64_t step = 0; step < o.steps; ++step) {
      std::vector<double> losses(o.workers, 0);
      absl::Status st = ForEachWorker(o.workers, o.label, true, [&](int w) {
        at::Tensor l = loss(w, step, aliases[w]);
        l.backward();
        losses[w] = l.item<double>();
      });
      if (!st.ok()) return st;
      double mean = 0;
      for (double l : losses) mean += l / o.workers;
      if (step == 0) report.first_loss = mean;
      if (step >= o.steps - std::max<int64_t>(1, o.steps / 10)) {
        tail_sum += mean;
        ++tail_n;
      }
      st = OptimizerStep(aliases, shards, adam, step + 1, LearningRate(o, step), o);
      if (!st.ok()) return st;
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
