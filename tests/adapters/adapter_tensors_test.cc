// ToLoraTensor: LoRA's A and B come back column-major, with every value and
// shape of the file, for every stored dtype and for shapes with and without
// edges beyond the transpose's blocks. ParseLayerIndex: the layer numbers the
// loaders accept.
#include "adapters/adapter_tensors.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/model/safetensors.h"

namespace adapterd::adapters {
namespace {

struct Case {
  at::ScalarType dtype;
  model::StDType st;
};

TEST(AdapterTensorsTest, LoraTensorsAreExactAndColumnMajorForEveryShapeAndDtype) {
  const std::vector<Case> cases = {{at::kFloat, model::StDType::kF32},
                                   {at::kHalf, model::StDType::kF16},
                                   {at::kBFloat16, model::StDType::kBF16}};
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},  {1, 37}, {37, 1},  {3, 5},   {8, 8},
                                                           {4, 12}, {16, 64}, {64, 768}, {768, 64}, {13, 29}};
  for (const Case& c : cases) {
    for (const auto& [rows, cols] : shapes) {
      SCOPED_TRACE(::testing::Message() << c10::toString(c.dtype) << " [" << rows << ", " << cols << "]");
      at::Tensor want = at::randn({rows, cols}).to(c.dtype);
      const std::string bytes(static_cast<const char*>(want.data_ptr()), want.nbytes());
      // An odd-length metadata value shifts the data so it starts unaligned.
      const std::string file = model::SerializeSafetensors(
          {{"w", c.st, {rows, cols}, bytes}}, {{"pad", std::string(static_cast<size_t>(rows % 7), 'x')}});
      absl::StatusOr<std::unique_ptr<model::SafetensorsFile>> f = model::SafetensorsFile::FromBytes(file, "t");
      ASSERT_TRUE(f.ok()) << f.status();
      const model::StTensorInfo* info = (*f)->Find("w");
      ASSERT_NE(info, nullptr);
      for (at::ScalarType base : {at::kFloat, at::kBFloat16}) {
        model::ModelOptions opts;
        opts.dtype = base;
        at::Tensor got = ToLoraTensor(**f, *info, opts);
        const at::ScalarType kept = base == at::kFloat && c.dtype != at::kFloat ? c.dtype : base;
        EXPECT_EQ(got.scalar_type(), kept);
        EXPECT_EQ(got.sizes(), want.sizes());
        EXPECT_TRUE(got.t().is_contiguous());
        EXPECT_TRUE(at::equal(got.to(at::kFloat), want.to(kept).to(at::kFloat)));
      }
    }
  }
}

TEST(AdapterTensorsTest, LayerIndexIsAPlainDecimalBelowTheLayerCount) {
  absl::StatusOr<std::unique_ptr<model::SafetensorsFile>> f =
      model::SafetensorsFile::FromBytes(model::SerializeSafetensors({{"w", model::StDType::kF32, {0}, ""}}), "dir/f");
  ASSERT_TRUE(f.ok()) << f.status();
  const model::StTensorInfo& t = *(*f)->Find("w");
  EXPECT_EQ(*ParseLayerIndex(**f, t, "0", 4), 0);
  EXPECT_EQ(*ParseLayerIndex(**f, t, "3", 4), 3);
  EXPECT_EQ(*ParseLayerIndex(**f, t, "31", 32), 31);
  for (const char* bad : {"4", "10", "01", "00", "", "-1", "+1", "1a", " 1", "9223372036854775808",
                          "123456789012345678901234567890"}) {
    const absl::Status s = ParseLayerIndex(**f, t, bad, 4).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << bad;
    EXPECT_EQ(s.message(), absl::StrCat("dir/f: tensor 'w': layer ", bad, " does not exist (the base has 4 layers)"));
  }
}

}  // namespace
}  // namespace adapterd::adapters
