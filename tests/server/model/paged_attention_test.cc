// PagedDecodeAttention against gather-then-attention (ATen's
// scaled_dot_product_attention over the same context gathered from the
// blocks): GQA, contexts of one position up to several blocks, scattered
// block tables, head sizes that take the vector loop (multiples of 32) and
// the generic one, rows whose KV heads are split between threads, float32,
// bfloat16 and float16. Query groups larger than a register tile (16 or 18
// heads over 2 KV heads) and groups that leave a partial tile (5 heads per
// KV head) check the tiling.
#include "server/model/paged_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

struct Case {
  int64_t heads, kv_heads, head_dim, block_size;
};

void Check(const Case& c, at::ScalarType dtype, double tolerance, std::vector<int64_t> lengths = {}) {
  at::manual_seed(11);
  std::mt19937 rng(5);
  if (lengths.empty()) {
    lengths = {1, 2, c.block_size - 1, c.block_size, c.block_size + 1, 3 * c.block_size + 5};
  }
  int64_t blocks = 40;
  for (int64_t len : lengths) blocks = std::max(blocks, 2 * ((len + c.block_size - 1) / c.block_size));
  const int64_t slots = blocks * c.block_size;
  const at::Tensor k = at::randn({slots, c.kv_heads, c.head_dim}).to(dtype);
  const at::Tensor v = at::randn({slots, c.kv_heads, c.head_dim}).to(dtype);
  // Each row's blocks are a random choice of the pool's, in random order.
  std::vector<std::vector<int32_t>> tables;
  for (int64_t len : lengths) {
    std::vector<int32_t> all(blocks);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(static_cast<size_t>((len + c.block_size - 1) / c.block_size));
    tables.push_back(all);
  }
  const int64_t rows = static_cast<int64_t>(lengths.size()) + 1;  // the last row is left alone
  const at::Tensor q = at::randn({rows, c.heads, c.head_dim}).to(dtype);
  at::Tensor out = at::full({rows, c.heads, c.head_dim}, 7.0).to(dtype);
  std::vector<DecodeRow> decode;
  for (size_t i = 0; i < lengths.size(); ++i) decode.push_back({&tables[i], lengths[i], static_cast<int64_t>(i)});
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  PagedDecodeAttention(q, k, v, decode, c.block_size, scale, out);
  for (size_t i = 0; i < lengths.size(); ++i) {
    std::vector<int64_t> slot;
    for (int64_t p = 0; p < lengths[i]; ++p) slot.push_back(tables[i][p / c.block_size] * c.block_size + p % c.block_size);
    const at::Tensor idx = at::tensor(slot, at::kLong);
    const at::Tensor ks = k.index_select(0, idx).to(at::kFloat).transpose(0, 1);  // [nkv, L, hd]
    const at::Tensor vs = v.index_select(0, idx).to(at::kFloat).transpose(0, 1);
    const at::Tensor qs = q.select(0, static_cast<int64_t>(i)).to(at::kFloat).unsqueeze(1);  // [nh, 1, hd]
    const at::Tensor want = at::scaled_dot_product_attention(qs, ks, vs, {}, 0.0, false, scale,
                                                             /*enable_gqa=*/c.heads != c.kv_heads)
                                .squeeze(1);
    const at::Tensor got = out.select(0, static_cast<int64_t>(i)).to(at::kFloat);
    const double diff = (got - want).abs().max().item<double>();
    EXPECT_LE(diff, tolerance) << "row " << i << " length " << lengths[i] << " heads " << c.heads << "/"
                               << c.kv_heads << " dtype " << at::toString(dtype);
  }
  EXPECT_TRUE(out.select(0, rows - 1).to(at::kFloat).eq(7.0).all().item<bool>()) << "a row not named was written";
}

TEST(PagedAttentionTest, MatchesGatheredAttentionInFloat32) {
  for (const Case& c : {Case{8, 4, 32, 16}, Case{12, 4, 64, 16}, Case{4, 4, 16, 8}, Case{6, 1, 8, 4},
                        Case{4, 2, 40, 8}, Case{4, 2, 128, 16}, Case{6, 3, 96, 8}, Case{16, 2, 64, 16},
                        Case{10, 2, 64, 8}, Case{10, 2, 128, 16}, Case{18, 2, 32, 8}, Case{4, 2, 160, 8}}) {
    Check(c, at::kFloat, 1e-5);
  }
}

TEST(PagedAttentionTest, MatchesGatheredAttentionInBfloat16) {
  for (const Case& c : {Case{8, 4, 32, 16}, Case{12, 4, 64, 16}, Case{4, 2, 128, 16}, Case{4, 4, 16, 8},
                        Case{10, 2, 64, 8}, Case{10, 2, 128, 16}}) {
    Check(c, at::kBFloat16, 2e-2);
  }
}

TEST(PagedAttentionTest, MatchesGatheredAttentionInFloat16) {
  for (const Case& c : {Case{8, 4, 32, 16}, Case{12, 4, 64, 16}, Case{4, 2, 128, 16}, Case{4, 4, 16, 8}}) {
    Check(c, at::kHalf, 2e-3);
  }
}

// Long contexts make each (row, KV head) item worth a thread of its own, so
// with two threads the nine items of three rows of three KV heads split
// within a row; each part of a row must still see all of that row's context.
TEST(PagedAttentionTest, RowsSplitBetweenThreads) {
  at::set_num_threads(2);
  ASSERT_EQ(at::get_num_threads(), 2);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    Check(Case{6, 3, 64, 16}, dtype, dtype == at::kFloat ? 1e-5 : 2e-2, {700, 900, 1100});
  }
}

TEST(PagedAttentionTest, RefusesMixedDtypes) {
  const at::Tensor k = at::zeros({4, 1, 8});
  const at::Tensor q = at::zeros({1, 2, 8}, at::kBFloat16);
  at::Tensor out = at::zeros({1, 2, 8}, at::kBFloat16);
  std::vector<int32_t> table = {0};
  const DecodeRow row{&table, 1, 0};
  EXPECT_THROW(PagedDecodeAttention(q, k, k, std::span<const DecodeRow>(&row, 1), 4, 1.0, out), c10::Error);
}

}  // namespace
}  // namespace adapterd::model
