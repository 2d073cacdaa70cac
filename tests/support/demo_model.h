// The demo base model (server/model/demo_checkpoint.cc) for tests that run
// adapters through it.
#ifndef ADAPTERD_TESTS_SUPPORT_DEMO_MODEL_H_
#define ADAPTERD_TESTS_SUPPORT_DEMO_MODEL_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "server/model/adapter_weights.h"
#include "server/model/llama_model.h"

namespace adapterd::testing {

// Writes the demo checkpoint into a fresh temporary directory and loads it
// with the default options.
absl::StatusOr<std::unique_ptr<model::LlamaModel>> LoadDemoModel();

// Last-token logits [1, vocab] of a fixed 11-token prompt through `base`
// with `adapter` (null: the base alone), with a KV cache in the model's dtype. A failure fails the test and gives
// an undefined tensor.
at::Tensor PromptLogits(const model::LlamaModel& base, const model::AdapterWeights* adapter);
// The same for the tokens of `prompt`.
at::Tensor PromptLogits(const model::LlamaModel& base, const model::AdapterWeights* adapter,
                        std::span<const int64_t> prompt);

// max |a - b|.
double MaxDiff(const at::Tensor& a, const at::Tensor& b);

// A fixture whose suite loads the demo model once, before its first test,
// and frees it after its last. SetUp() fails each test when it did not load.
class DemoModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  void SetUp() override;

  static const model::LlamaModel& base() { return *base_; }

  static model::LlamaModel* base_;
};

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_SUPPORT_DEMO_MODEL_H_
