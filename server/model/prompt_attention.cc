#include "server/model/prompt_attention.h"

#include <ATen/ATen.h>

#include <optional>

#include "server/common/compute_threads.h"

namespace adapterd::model {
namespace {

// Whether a prompt chunk's attention takes SDPA's blocked (flash) kernel,
// whose memory is linear in the context, rather than its math path, which
// materialises [heads, n, context] scores. In float32 always: the two agree
// to rounding. In bfloat16 and float16 the math path is what transformers
// runs (its GQA call), and the blocked kernel's different rounding moves
// logits by a few percent, so half precision takes it only where the
// scores would pass 16 MiB (a long prompt's chunks). A single query row
// (a decode row that is not read in place) never does: its scores are
// already linear in the context, and repeating GQA's KV heads would only
// copy them.
bool BlockedPrefill(at::ScalarType dtype, int64_t heads, int64_t n, int64_t context) {
  constexpr int64_t kMaxHalfScores = int64_t{4} << 20;  // float32 scores
  return n > 1 && (dtype == at::kFloat || heads * n * context > kMaxHalfScores);
}

}  // namespace

void PromptChunkAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                          const ForwardBatch& batch, const StepLayout& layout, int64_t kv_heads, double scale,
                          at::Tensor& attn) {
  const int64_t heads = q.size(1);
  int64_t off = 0;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SequenceChunk& sc = batch.seqs[s];
    if (!layout.read_slots[s].defined()) {  // attended in place, with the decode rows
      off += sc.num_tokens;
      continue;
    }
    at::Tensor qs = q.narrow(0, off, sc.num_tokens).transpose(0, 1);                // [nh, n, hd]
    at::Tensor ks = k_cache.index_select(0, layout.read_slots[s]).transpose(0, 1);  // [nkv, L, hd]
    at::Tensor vs = v_cache.index_select(0, layout.read_slots[s]).transpose(0, 1);
    const bool causal = sc.context_len == 0;
    at::Tensor o;
    if (BlockedPrefill(q.scalar_type(), heads, sc.num_tokens, ks.size(1))) {
      // Four dimensions and as many KV heads as query heads are what
      // SDPA's blocked (flash) kernel takes; its memory is linear in L.
      const int64_t group = heads / kv_heads;
      if (group > 1) {
        ks = ks.repeat_interleave(group, 0);
        vs = vs.repeat_interleave(group, 0);
      }
      // The kernel's GEMMs run inside its parallel region: one thread each.
      ScopedSerialBlas serial_blas;
      o = at::scaled_dot_product_attention(qs.unsqueeze(0), ks.unsqueeze(0), vs.unsqueeze(0), layout.masks[s], 0.0,
                                           causal, scale)
              .squeeze(0);
    } else {
      o = at::scaled_dot_product_attention(qs, ks, vs, layout.masks[s], 0.0, causal, scale,
                                           /*enable_gqa=*/heads != kv_heads);
    }
    attn.narrow(0, off, sc.num_tokens).copy_(o.transpose(0, 1));
    off += sc.num_tokens;
  }
}

}  // namespace adapterd::model
