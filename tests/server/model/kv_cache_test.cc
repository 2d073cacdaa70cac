// The KV pool's shared blocks: reference counts, copy-on-write, and blocks
// counted once however many tables hold them.
#include "server/model/kv_cache.h"

#include <ATen/ATen.h>

#include "gtest/gtest.h"
#include "server/model/model_config.h"

namespace adapterd::model {
namespace {

ModelConfig TinyConfig() {
  ModelConfig c;
  c.num_layers = 2;
  c.num_kv_heads = 2;
  c.head_dim = 4;
  return c;
}

std::unique_ptr<KvCache> MakePool(int64_t blocks, int64_t block_size = 4) {
  const ModelConfig c = TinyConfig();
  auto kv = KvCache::Create(c, block_size, blocks * KvCache::BytesPerBlock(c, block_size, at::kFloat), at::kFloat,
                            at::kCPU);
  EXPECT_TRUE(kv.ok()) << kv.status();
  return kv.ok() ? *std::move(kv) : nullptr;
}

// [layers, n, kv heads, head_dim] filled with `start`, start + 1, ...
at::Tensor Values(int64_t n, float start) {
  return at::arange(start, start + 2.0 * n * 2 * 4, at::kFloat).view({2, n, 2, 4});
}

TEST(KvCacheTest, SharedBlockCountsOnceAndFreesWithItsLastHolder) {
  auto kv = MakePool(4);
  ASSERT_NE(kv, nullptr);
  std::vector<int32_t> a;
  ASSERT_TRUE(kv->Reserve(a, 8));  // two blocks
  EXPECT_EQ(kv->free_blocks(), 2);
  std::vector<int32_t> b = {a[0]};
  kv->Share(a[0]);
  EXPECT_EQ(kv->ref_count(a[0]), 2);
  EXPECT_EQ(kv->free_blocks(), 2);
  EXPECT_DOUBLE_EQ(kv->utilization(), 0.5);
  kv->Free(a);
  EXPECT_EQ(kv->free_blocks(), 3);  // the shared block stays with b
  EXPECT_EQ(kv->ref_count(b[0]), 1);
  kv->Free(b);
  EXPECT_EQ(kv->free_blocks(), 4);
  EXPECT_DOUBLE_EQ(kv->utilization(), 0.0);
}

TEST(KvCacheTest, WritingIntoASharedBlockCopiesItFirst) {
  auto kv = MakePool(4);
  ASSERT_NE(kv, nullptr);
  std::vector<int32_t> owner;
  ASSERT_TRUE(kv->Reserve(owner, 6));
  kv->Write(owner, 0, Values(6, 0), Values(6, 1000));
  std::vector<int32_t> reader = owner;
  for (int32_t b : reader) kv->Share(b);
  const at::Tensor k_before = kv->k(1).clone();

  // Positions 5..6 lie in the second block: only it is copied.
  ASSERT_TRUE(kv->MakeWritable(reader, 5, 7));
  EXPECT_EQ(reader[0], owner[0]);
  EXPECT_NE(reader[1], owner[1]);
  EXPECT_EQ(kv->copies(), 1);
  EXPECT_EQ(kv->ref_count(owner[1]), 1);
  EXPECT_EQ(kv->ref_count(reader[1]), 1);
  const int64_t bs = kv->block_size();
  for (int64_t l = 0; l < 2; ++l) {
    EXPECT_TRUE(at::equal(kv->k(l).narrow(0, reader[1] * bs, bs), kv->k(l).narrow(0, owner[1] * bs, bs)));
    EXPECT_TRUE(at::equal(kv->v(l).narrow(0, reader[1] * bs, bs), kv->v(l).narrow(0, owner[1] * bs, bs)));
  }
  // The reader's write leaves the owner's block as it was.
  kv->Write(reader, 5, Values(1, -50), Values(1, -60));
  EXPECT_TRUE(at::equal(kv->k(1).narrow(0, owner[1] * bs, bs), k_before.narrow(0, owner[1] * bs, bs)));
  EXPECT_FALSE(at::equal(kv->k(1).narrow(0, reader[1] * bs, bs), k_before.narrow(0, owner[1] * bs, bs)));
  // Blocks held alone are not copied: the reader's first block is still
  // shared, so it alone is copied now.
  ASSERT_TRUE(kv->MakeWritable(reader, 0, 8));
  EXPECT_EQ(kv->copies(), 2);
  kv->Free(owner);
  kv->Free(reader);
  EXPECT_EQ(kv->free_blocks(), 4);
}

TEST(KvCacheTest, CopyOnWriteFailsWholeWhenThePoolIsShort) {
  auto kv = MakePool(2);
  ASSERT_NE(kv, nullptr);
  std::vector<int32_t> owner;
  ASSERT_TRUE(kv->Reserve(owner, 8));
  std::vector<int32_t> reader = owner;
  for (int32_t b : reader) kv->Share(b);
  EXPECT_FALSE(kv->MakeWritable(reader, 0, 8));
  EXPECT_EQ(reader, owner);  // unchanged
  EXPECT_EQ(kv->copies(), 0);
  kv->Free(owner);  // now both blocks are the reader's alone
  EXPECT_TRUE(kv->MakeWritable(reader, 0, 8));
  EXPECT_EQ(kv->copies(), 0);
  kv->Free(reader);
}

}  // namespace
}  // namespace adapterd::model
