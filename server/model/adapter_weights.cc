#include "server/model/adapter_weights.h"

#include <algorithm>
#include <atomic>

#include "server/model/huge_page_region.h"

namespace adapterd::model {

std::string_view ProjPath(Proj p) {
  static constexpr std::string_view kPaths[kNumProj] = {
      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  return kPaths[static_cast<int>(p)];
}

std::string_view ProjName(Proj p) {
  std::string_view path = ProjPath(p);
  return path.substr(path.find('.') + 1);
}

LoraModule LoraModule::FromPeft(const at::Tensor& lora_a, const at::Tensor& lora_b, double scale) {
  LoraModule m;
  m.a_t = lora_a.t().contiguous();
  m.b_t = lora_b.t().contiguous();
  m.a = m.a_t.t();
  m.b = m.b_t.t();
  m.scale = scale;
  return m;
}

void LoraModule::FillRowView() {
  row = RowView{};
  if (!a_t.defined() || !b_t.defined() || !a_t.device().is_cpu() || !b_t.device().is_cpu() ||
      b_t.scalar_type() != a_t.scalar_type() || !a_t.is_contiguous() || !b_t.is_contiguous()) {
    return;
  }
  if (dora_scale.defined() && (dora_scale.scalar_type() != at::kFloat || !dora_scale.is_contiguous() ||
                               !dora_scale.device().is_cpu())) {
    return;
  }
  switch (a_t.scalar_type()) {
    case at::kFloat: row.type = LoraWeightType::kF32; break;
    case at::kHalf: row.type = LoraWeightType::kF16; break;
    case at::kBFloat16: row.type = LoraWeightType::kBF16; break;
    default: return;
  }
  row.a_t = a_t.data_ptr();
  row.b_t = b_t.data_ptr();
  row.dora_scale = dora_scale.defined() ? dora_scale.data_ptr<float>() : nullptr;
  row.rank = rank();
  row.ok = true;
}

AdapterWeights::AdapterWeights(int64_t num_layers, AdapterKind kind)
    : kind_(kind), modules_(num_layers), ia3_(num_layers), bottlenecks_(num_layers), adaption_(num_layers),
      bias_deltas_(num_layers) {
  static std::atomic<uint64_t> next_instance{1};  // 0 stands for the base model
  instance_id_ = next_instance.fetch_add(1, std::memory_order_relaxed);
}

void AdapterWeights::PackLoras() {
  constexpr int64_t kAlign = 64;
  const auto padded = [](const at::Tensor& t) {
    return (static_cast<int64_t>(t.nbytes()) + kAlign - 1) / kAlign * kAlign;
  };
  const auto packable = [](const LoraModule& m) {
    return m.a_t.defined() && m.b_t.defined() && m.a_t.device().is_cpu() && m.b_t.device().is_cpu();
  };
  int64_t total = 0;
  for (const auto& layer : modules_) {
    for (const LoraModule& m : layer) {
      if (packable(m)) total += padded(m.a_t) + padded(m.b_t);
    }
  }
  if (total == 0) return;
  const at::Tensor region = HugePageBytes(total);
  int64_t offset = 0;
  const auto place = [&](at::Tensor& t) {
    at::Tensor dst = region.narrow(0, offset, static_cast<int64_t>(t.nbytes())).view(t.scalar_type()).view(t.sizes());
    dst.copy_(t);
    offset += padded(t);
    t = std::move(dst);
  };
  // The projections that read one input (q, k, v; o; gate, up; down) are
  // one group of a step: the group's A's, then its B's, so that each of a
  // step's two sweeps over a group (the shrinks, then the expands one after
  // another) reads one run of memory, and a kernel's reads ahead of the end
  // of one B land on the next.
  static constexpr int kGroupEnd[] = {3, 4, 6, 7};
  static_assert(kGroupEnd[3] == kNumProj && static_cast<int>(Proj::kO) == 3 && static_cast<int>(Proj::kDown) == 6);
  for (auto& layer : modules_) {
    int first = 0;
    for (const int end : kGroupEnd) {
      for (int p = first; p < end; ++p) {
        if (packable(layer[p])) place(layer[p].a_t);
      }
      for (int p = first; p < end; ++p) {
        if (packable(layer[p])) place(layer[p].b_t);
      }
      first = end;
    }
    for (LoraModule& m : layer) {
      if (!packable(m)) continue;
      m.a = m.a_t.t();
      m.b = m.b_t.t();
      m.FillRowView();
    }
  }
}

int64_t TokenRows::Find(int64_t id) const {
  auto it = std::lower_bound(ids.begin(), ids.end(), id);
  return it != ids.end() && *it == id ? static_cast<int64_t>(it - ids.begin()) : -1;
}

int64_t AdapterWeights::bytes() const {
  int64_t total = 0;
  auto add = [&total](const at::Tensor& t) {
    if (t.defined()) total += static_cast<int64_t>(t.nbytes());
  };
  for (const auto& layer : modules_) {
    for (const LoraModule& m : layer) {
      add(m.a_t);
      add(m.b_t);
      add(m.dora_scale);
    }
  }
  for (const auto& layer : ia3_) {
    for (const Ia3Module& m : layer) add(m.scale);
  }
  for (const auto& layer : bottlenecks_) {
    for (const BottleneckModule& m : layer) {
      for (const at::Tensor* t : {&m.down_t, &m.down_b, &m.up_t, &m.up_b, &m.ln_before_w, &m.ln_before_b,
                                  &m.ln_after_w, &m.ln_after_b, &m.scaling_t}) {
        add(*t);
      }
    }
  }
  add(prompt_);
  add(prefix_kv_);
  for (const AdaptionPromptModule& m : adaption_) {
    add(m.k_t);
    add(m.v);
    add(m.gate);
  }
  for (const auto& layer : bias_deltas_) {
    for (const at::Tensor& t : layer) add(t);
  }
  for (const at::Tensor* t : {&embed_tokens_, &lm_head_, &classifier_, &embed_token_rows_.rows,
                              &embed_token_rows_.index, &embedding_lora_.a_rows, &embedding_lora_.b_t}) {
    add(*t);
  }
  if (!head_token_rows_.rows.is_same(embed_token_rows_.rows)) {  // tied: the same rows
    add(head_token_rows_.rows);
    add(head_token_rows_.index);
  }
  return total;
}

}  // namespace adapterd::model
