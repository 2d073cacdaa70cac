// GatheredDecodeAttention against PagedDecodeAttention (itself tested
// against SDPA over each row's gathered context): rows of different context
// lengths in one batch, scattered block tables, GQA, rows of q out of
// order and rows left alone, float32, bfloat16 and float16.
#include "server/model/gathered_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "server/model/paged_attention.h"

namespace adapterd::model {
namespace {

struct Case {
  int64_t heads, kv_heads, head_dim, block_size;
};

void Check(const Case& c, at::ScalarType dtype, double tolerance) {
  at::manual_seed(3);
  std::mt19937 rng(9);
  const int64_t blocks = 48, slots = blocks * c.block_size;
  const at::Tensor k = at::randn({slots, c.kv_heads, c.head_dim}).to(dtype);
  const at::Tensor v = at::randn({slots, c.kv_heads, c.head_dim}).to(dtype);
  const std::vector<int64_t> lengths = {3 * c.block_size + 5, 1, c.block_size, 2, c.block_size + 1, c.block_size - 1};
  std::vector<std::vector<int32_t>> tables;
  for (int64_t len : lengths) {
    std::vector<int32_t> all(blocks);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(static_cast<size_t>((len + c.block_size - 1) / c.block_size));
    tables.push_back(all);
  }
  // Row i of the batch is row perm[i] of q; q's last row is no decode row.
  const int64_t rows = static_cast<int64_t>(lengths.size()) + 1;
  std::vector<int64_t> perm(lengths.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<DecodeRow> decode;
  for (size_t i = 0; i < lengths.size(); ++i) decode.push_back({&tables[i], lengths[i], perm[i]});
  const at::Tensor q = at::randn({rows, c.heads, c.head_dim}).to(dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  at::Tensor want = at::full({rows, c.heads, c.head_dim}, 7.0).to(dtype);
  at::Tensor got = want.clone();
  PagedDecodeAttention(q, k, v, decode, c.block_size, scale, want);
  GatheredDecodeAttention(q, k, v, GatherDecodeRows(decode, c.block_size, q.device()), scale, got);
  for (size_t i = 0; i < lengths.size(); ++i) {
    const int64_t r = perm[i];
    const double diff = (got.select(0, r).to(at::kFloat) - want.select(0, r).to(at::kFloat)).abs().max().item<double>();
    EXPECT_LE(diff, tolerance) << "decode row " << i << " (q row " << r << ") length " << lengths[i] << " heads "
                               << c.heads << "/" << c.kv_heads << " " << at::toString(dtype);
  }
  EXPECT_TRUE(got.select(0, rows - 1).to(at::kFloat).eq(7.0).all().item<bool>()) << "a row not named was written";
}

TEST(GatheredAttentionTest, MatchesPagedAttentionInFloat32) {
  for (const Case& c : {Case{8, 4, 32, 16}, Case{12, 4, 64, 16}, Case{4, 4, 16, 8}, Case{6, 1, 8, 4}}) {
    Check(c, at::kFloat, 1e-5);
  }
}

TEST(GatheredAttentionTest, MatchesPagedAttentionInBfloat16) {
  for (const Case& c : {Case{8, 4, 32, 16}, Case{12, 4, 64, 16}}) Check(c, at::kBFloat16, 2e-2);
}

TEST(GatheredAttentionTest, MatchesPagedAttentionInFloat16) {
  for (const Case& c : {Case{8, 4, 32, 16}, Case{12, 4, 64, 16}}) Check(c, at::kHalf, 2e-3);
}

TEST(GatheredAttentionTest, NoRowsIsNothing) {
  const at::Tensor k = at::zeros({4, 1, 8});
  at::Tensor out = at::full({1, 2, 8}, 3.0);
  const GatheredDecodeRows none = GatherDecodeRows({}, 4, at::kCPU);
  EXPECT_EQ(none.rows, 0);
  GatheredDecodeAttention(at::zeros({1, 2, 8}), k, k, none, 1.0, out);
  EXPECT_TRUE(out.eq(3.0).all().item<bool>());
}

}  // namespace
}  // namespace adapterd::model
