#include "server/model/gathered_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

namespace adapterd::model {

GatheredDecodeRows GatherDecodeRows(std::span<const DecodeRow> rows, int64_t block_size, c10::Device device) {
  GatheredDecodeRows g;
  if (rows.empty()) return g;
  const int64_t n = static_cast<int64_t>(rows.size());
  int64_t longest = 0;
  for (const DecodeRow& r : rows) longest = std::max(longest, r.length);
  // One host buffer, copied to the device once: each row's slots (padded
  // with slot 0, masked), then each row's length, then its row of q.
  std::vector<int64_t> host(static_cast<size_t>(n * longest + 2 * n), 0);
  for (int64_t i = 0; i < n; ++i) {
    const DecodeRow& r = rows[static_cast<size_t>(i)];
    const std::vector<int32_t>& table = *r.block_table;
    int64_t* slots = host.data() + i * longest;
    for (int64_t p = 0; p < r.length; ++p) slots[p] = int64_t{table[p / block_size]} * block_size + p % block_size;
    host[static_cast<size_t>(n * longest + i)] = r.length;
    host[static_cast<size_t>(n * longest + n + i)] = r.row;
  }
  const at::Tensor index = at::from_blob(host.data(), {static_cast<int64_t>(host.size())}, at::kLong)
                               .to(device, /*non_blocking=*/false, /*copy=*/true);
  const at::Tensor lengths = index.narrow(0, n * longest, n);
  g.rows = n;
  g.longest = longest;
  g.slots = index.narrow(0, 0, n * longest);
  g.mask = at::arange(longest, lengths.options()).unsqueeze(0).lt(lengths.unsqueeze(1)).view({n, 1, 1, longest});
  g.q_rows = index.narrow(0, n * longest + n, n);
  return g;
}

void GatheredDecodeAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                             const GatheredDecodeRows& rows, double scale, at::Tensor& out) {
  if (rows.rows == 0) return;
  const int64_t n = rows.rows, longest = rows.longest;
  const int64_t kv_heads = k_cache.size(1), head_dim = k_cache.size(2);
  // [n, kv_heads, longest, head_dim]
  const at::Tensor k = k_cache.index_select(0, rows.slots).view({n, longest, kv_heads, head_dim}).transpose(1, 2);
  const at::Tensor v = v_cache.index_select(0, rows.slots).view({n, longest, kv_heads, head_dim}).transpose(1, 2);
  const at::Tensor qs = q.index_select(0, rows.q_rows).unsqueeze(2);  // [n, heads, 1, head_dim]
  const at::Tensor o = at::scaled_dot_product_attention(qs, k, v, rows.mask, 0.0, /*is_causal=*/false, scale,
                                                        /*enable_gqa=*/q.size(1) != kv_heads);
  out.index_copy_(0, rows.q_rows, o.squeeze(2));
}

}  // namespace adapterd::model
