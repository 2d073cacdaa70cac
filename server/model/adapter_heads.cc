#include "server/model/adapter_heads.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

#include "server/model/linear.h"

namespace adapterd::model {
namespace {

at::Tensor Index(const std::vector<int64_t>& v, const at::Device& device) {
  return at::tensor(at::ArrayRef<int64_t>(v), at::TensorOptions().dtype(at::kLong)).to(device);
}

// Weights kept in half precision on a fp32 base are widened (exactly).
at::Tensor Widened(const at::Tensor& w, const at::Tensor& like) {
  return w.scalar_type() == like.scalar_type() ? w : w.to(like.scalar_type());
}

// Overwrites the rows of `xs` (one segment, ids `seg_ids` on the host) whose
// token is one of `tr`'s with its row.
void ReplaceTokenRows(at::Tensor& xs, const int64_t* seg_ids, int64_t n, const TokenRows& tr) {
  std::vector<int64_t> pos, which;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t k = tr.Find(seg_ids[r]);
    if (k < 0) continue;
    pos.push_back(r);
    which.push_back(k);
  }
  if (pos.empty()) return;
  xs.index_copy_(0, Index(pos, xs.device()), tr.rows.index_select(0, Index(which, xs.device())));
}

}  // namespace

at::Tensor EmbedTokens(const at::Tensor& embed, const at::Tensor& ids, const std::vector<int64_t>& host_ids,
                       const std::vector<AdapterSegment>& segments) {
  at::Tensor x = embed.index_select(0, ids);
  for (const AdapterSegment& s : segments) {
    const AdapterWeights& a = *s.adapter;
    if (!a.ChangesEmbedding()) continue;
    at::Tensor xs = x.narrow(0, s.start, s.rows);
    const at::Tensor seg_ids = ids.narrow(0, s.start, s.rows);
    if (a.embed_tokens().defined()) xs.copy_(a.embed_tokens().index_select(0, seg_ids));
    if (!a.embed_token_rows().empty()) ReplaceTokenRows(xs, host_ids.data() + s.start, s.rows, a.embed_token_rows());
    if (const EmbeddingLora* m = a.FindEmbeddingLora()) {
      xs.add_(at::mm(Widened(m->a_rows.index_select(0, seg_ids), xs), Widened(m->b_t, xs)), m->scale);
    }
  }
  return x;
}

ForwardOutput ApplyHeads(const at::Tensor& hidden, const at::Tensor& lm_head, const std::vector<HeadRow>& rows,
                         int64_t skinny_rows, const at::Tensor& lm_head_packed) {
  ForwardOutput out;
  const int64_t n = static_cast<int64_t>(rows.size());
  std::vector<int64_t> shared, shared_pos;  // rows on the base head, and their logits rows
  std::vector<int64_t> pos(rows.size(), -1);
  bool plain = true;  // every row generates through the base head
  int64_t generating = 0;
  for (int64_t i = 0; i < n; ++i) {
    const AdapterWeights* a = rows[i].adapter;
    if (rows[i].classify) {
      plain = false;
      continue;
    }
    pos[i] = generating++;
    if (a == nullptr || !a->lm_head().defined()) {
      shared.push_back(i);
      shared_pos.push_back(pos[i]);
    } else {
      plain = false;
    }
  }
  const at::Device device = hidden.device();
  if (plain) {
    out.logits = Linear(hidden, lm_head, at::Tensor(), skinny_rows, lm_head_packed).to(at::kFloat);
  } else {
    out.logits = at::empty({generating, lm_head.size(0)}, hidden.options().dtype(at::kFloat));
    if (!shared.empty()) {
      out.logits.index_copy_(0, Index(shared_pos, device),
                             Linear(hidden.index_select(0, Index(shared, device)), lm_head, at::Tensor(), skinny_rows,
                                    lm_head_packed)
                                 .to(at::kFloat));
    }
    // Own heads: each run of rows sharing an adapter is one product.
    for (int64_t i = 0; i < n;) {
      const AdapterWeights* a = rows[i].adapter;
      if (pos[i] < 0 || a == nullptr || !a->lm_head().defined()) {
        ++i;
        continue;
      }
      std::vector<int64_t> idx, at_pos;
      for (; i < n && rows[i].adapter == a && pos[i] >= 0; ++i) {
        idx.push_back(i);
        at_pos.push_back(pos[i]);
      }
      out.logits.index_copy_(0, Index(at_pos, device),
                             Linear(hidden.index_select(0, Index(idx, device)), a->lm_head(), at::Tensor(), skinny_rows)
                                 .to(at::kFloat));
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const AdapterWeights* a = rows[i].adapter;
    if (pos[i] >= 0 && a != nullptr && !a->head_token_rows().empty()) {
      const TokenRows& tr = a->head_token_rows();
      out.logits.narrow(0, pos[i], 1)
          .index_copy_(1, tr.index, at::linear(hidden.narrow(0, i, 1), tr.rows).to(at::kFloat));
    }
    if (rows[i].classify) {
      if (a == nullptr || !a->is_classifier()) {
        throw std::invalid_argument("a classification row's adapter has no classification head");
      }
      out.scores.push_back(
          at::linear(hidden.select(0, i), a->classifier()).to(at::Device(at::kCPU), at::kFloat).contiguous());
    }
  }
  return out;
}

}  // namespace adapterd::model
