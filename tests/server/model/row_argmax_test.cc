// RowArgmax against at::argmax(logits, 1): random rows of several widths
// (inside and past the vector loop), ties for the maximum, NaNs, rows of
// -inf and +inf, many rows over both threads, and what it must refuse.
#include "server/model/row_argmax.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <limits>

#include "gtest/gtest.h"

namespace adapterd::model {
namespace {

void ExpectSame(const at::Tensor& logits, const char* what) {
  ASSERT_TRUE(RowArgmaxSupports(logits)) << what;
  const at::Tensor got = RowArgmax(logits);
  ASSERT_EQ(got.scalar_type(), at::kLong) << what;
  EXPECT_TRUE(got.equal(logits.argmax(1))) << what << "\n got " << got << "\n want " << logits.argmax(1);
}

TEST(RowArgmaxTest, MatchesAtenArgmax) {
  at::set_num_threads(2);
  at::manual_seed(17);
  for (const int64_t cols : {1, 15, 16, 17, 33, 1000, 32000}) ExpectSame(at::randn({9, cols}), "random");
  ExpectSame(at::randn({64, 32000}), "a step of 64 rows");
  // Ties: values drawn from a few integers, so every row's maximum repeats,
  // in several lanes and in the tail.
  ExpectSame(at::randint(0, 4, {20, 77}).to(at::kFloat), "ties");
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  at::Tensor special = at::randn({6, 40});
  special[0].fill_(-inf);                 // all -inf: index 0
  special[1][5] = inf;                    // one +inf
  special[1][30] = inf;                   // and a later one
  special[2][21] = nan;                   // a NaN wins over everything
  special[3][39] = nan;                   // a NaN in the tail
  special[3][2] = inf;
  special[4][7] = nan;                    // the first of two NaNs
  special[4][8] = nan;
  special[5].fill_(inf);                  // all +inf
  ExpectSame(special, "infinities and NaNs");
}

TEST(RowArgmaxTest, RefusesWhatItCannotTake) {
  EXPECT_FALSE(RowArgmaxSupports(at::zeros({2, 4}, at::kBFloat16)));
  EXPECT_FALSE(RowArgmaxSupports(at::zeros({4, 2}).t()));
  EXPECT_FALSE(RowArgmaxSupports(at::zeros({8})));
  EXPECT_FALSE(RowArgmaxSupports(at::zeros({2, 0})));
  EXPECT_TRUE(RowArgmaxSupports(at::zeros({0, 4})));
  EXPECT_EQ(RowArgmax(at::zeros({0, 4})).numel(), 0);
  EXPECT_THROW(RowArgmax(at::zeros({2, 4}, at::kDouble)), c10::Error);
}

}  // namespace
}  // namespace adapterd::model
