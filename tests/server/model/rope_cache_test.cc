// RopeAndWriteCache against Llama's rotary embedding written with ATen's ops
// on tensors of the dtype (x * cos + rotate_half(x) * sin, as transformers'
// apply_rotary_pos_emb computes it, each op rounded) followed by index_copy_
// into the caches: float32, bfloat16 and float16, q/k/v as column views of
// one fused projection, prompt-sized steps that run on several threads, and
// the inputs it must refuse.
#include "server/model/rope_cache.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

at::Tensor Rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

void Check(int64_t T, int64_t heads, int64_t kv_heads, int64_t hd, at::ScalarType dtype) {
  at::manual_seed(3);
  const int64_t slots = 3 * T + 7;
  const at::Tensor fused = at::randn({T, (heads + 2 * kv_heads) * hd}).to(dtype);
  const at::Tensor q = fused.narrow(1, 0, heads * hd);
  const at::Tensor k = fused.narrow(1, heads * hd, kv_heads * hd);
  const at::Tensor v = fused.narrow(1, (heads + kv_heads) * hd, kv_heads * hd);
  const at::Tensor angles = at::rand({T, hd / 2}) * 50;
  const at::Tensor cos = at::cat({angles.cos(), angles.cos()}, 1).to(dtype);
  const at::Tensor sin = at::cat({angles.sin(), angles.sin()}, 1).to(dtype);
  const at::Tensor perm = at::randperm(slots).narrow(0, 0, T);  // distinct slots in random order
  std::vector<int64_t> write_slots(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + T);
  at::Tensor k_cache = at::randn({slots, kv_heads, hd}).to(dtype), v_cache = at::randn({slots, kv_heads, hd}).to(dtype);
  at::Tensor want_k = k_cache.clone(), want_v = v_cache.clone();
  const at::Tensor want_q = Rope(q.reshape({T, heads, hd}), cos, sin);
  want_k.index_copy_(0, perm, Rope(k.reshape({T, kv_heads, hd}), cos, sin));
  want_v.index_copy_(0, perm, v.view({T, kv_heads, hd}));

  ASSERT_TRUE(RopeCacheSupports(q, k, v, cos, sin, k_cache, v_cache));
  at::Tensor q_out = at::empty({T, heads, hd}, q.options());
  RopeAndWriteCache(q, k, v, cos, sin, write_slots, q_out, k_cache, v_cache);
  // The same roundings; float32 may differ in the last bit (fused
  // multiply-adds), and half-precision results must agree exactly.
  const double tol = dtype == at::kFloat ? 1e-5 : 0.0;
  auto close = [&](const at::Tensor& got, const at::Tensor& want) {
    return tol == 0.0 ? got.equal(want) : at::allclose(got.to(at::kFloat), want.to(at::kFloat), tol, tol);
  };
  EXPECT_TRUE(close(q_out, want_q)) << at::toString(dtype) << " T " << T;
  EXPECT_TRUE(close(k_cache, want_k)) << at::toString(dtype) << " T " << T;
  EXPECT_TRUE(v_cache.equal(want_v)) << at::toString(dtype) << " T " << T;
  // The rotation is not the identity: a kernel that copied q would fail.
  EXPECT_FALSE(close(q_out, q.view({T, heads, hd})));
}

TEST(RopeCacheTest, MatchesAtenOps) {
  at::set_num_threads(2);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    Check(1, 12, 4, 64, dtype);      // a decode row
    Check(64, 12, 4, 64, dtype);     // a decode step of 64 rows
    Check(300, 8, 8, 32, dtype);     // a prompt chunk, over both threads
    Check(5, 6, 2, 10, dtype);       // a head size that is not a power of two
    Check(7, 4, 2, 96, dtype);       // 32-lane blocks and a scalar tail in each half
    Check(9, 4, 1, 128, dtype);      // two 32-lane blocks in each half
  }
}

TEST(RopeCacheTest, RefusesWhatItCannotTake) {
  const at::Tensor q = at::zeros({2, 8}), k = at::zeros({2, 4}), cs = at::zeros({2, 4});
  at::Tensor cache = at::zeros({6, 1, 4});
  EXPECT_FALSE(RopeCacheSupports(q.to(at::kDouble), k, k, cs, cs, cache, cache));
  EXPECT_FALSE(RopeCacheSupports(q, k.to(at::kBFloat16), k, cs, cs, cache, cache));
  EXPECT_FALSE(RopeCacheSupports(q.t(), k, k, cs, cs, cache, cache));
  EXPECT_FALSE(RopeCacheSupports(q, k, k, cs.t(), cs, cache, cache));
  ASSERT_TRUE(RopeCacheSupports(q, k, k, cs, cs, cache, cache));
  at::Tensor q_out = at::zeros({2, 2, 4});
  at::Tensor v_cache = cache.clone();
  const std::vector<int64_t> outside = {0, 6};
  EXPECT_THROW(RopeAndWriteCache(q, k, k, cs, cs, outside, q_out, cache, v_cache), c10::Error);
  EXPECT_TRUE(v_cache.eq(0).all().item<bool>()) << "a refused call wrote to the cache";
  const std::vector<int64_t> one = {0};
  EXPECT_THROW(RopeAndWriteCache(q, k, k, cs, cs, one, q_out, cache, v_cache), c10::Error);
}

}  // namespace
}  // namespace adapterd::model
