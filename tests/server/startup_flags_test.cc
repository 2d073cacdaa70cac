// adapterd refuses to start, with a message that names the flag, on a
// device this build cannot use and on budgets the model or the machine
// cannot meet; nothing is loaded and no listener opens.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/demo_checkpoint.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

using ::testing::HasSubstr;

class StartupFlagsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cache_ = new std::string(testing::MakeTempDir("startup-flags"));
    ASSERT_TRUE(model::EnsureDemoCheckpoint(*cache_).ok());
  }
  // adapterd's output when it fails to start with `flags`; fails the test
  // if it starts.
  static std::string Refusal(const std::string& flags) {
    const std::string cmd = std::string(ADAPTERD_BINARY_DIR) + "/server/adapterd --listen=127.0.0.1:0 " +
                            "--metrics_listen= --demo_trained=false --demo_adapters=false --cache_dir=" + *cache_ +
                            " " + flags + " --ready_file=" + *cache_ + "/never-ready";
    absl::StatusOr<std::string> out = testing::RunCommand("timeout 120 " + cmd);
    EXPECT_FALSE(out.ok()) << "adapterd started with " << flags;
    return out.ok() ? std::string() : std::string(out.status().message());
  }
  static std::string* cache_;
};
std::string* StartupFlagsTest::cache_ = nullptr;

TEST_F(StartupFlagsTest, DeviceTheBuildCannotUse) {
  EXPECT_THAT(Refusal("--device=cuda"), HasSubstr("--device=cuda: this build's LibTorch has no CUDA"));
  EXPECT_THAT(Refusal("--device=cuda:1"), HasSubstr("--device=cuda:1: this build's LibTorch has no CUDA"));
  EXPECT_THAT(Refusal("--device=tpu"), HasSubstr("--device must be cpu, cuda or cuda:N, not \"tpu\""));
  EXPECT_THAT(Refusal("--device=cuda:x"), HasSubstr("--device must be cpu, cuda or cuda:N"));
}

TEST_F(StartupFlagsTest, DeltaBackendThatIsNotOne) {
  EXPECT_THAT(Refusal("--delta_backend=punica"), HasSubstr("--delta_backend must be auto, aten or sgmv"));
}

TEST_F(StartupFlagsTest, CudaGraphsWhereTheyCannotBeUsed) {
  EXPECT_THAT(Refusal("--cuda_graphs=on"),
              HasSubstr("CUDA graphs for decode steps (--cuda_graphs=on) on cpu: not a CUDA device"));
  EXPECT_THAT(Refusal("--cuda_graphs=yes"), HasSubstr("--cuda_graphs must be auto, on or off"));
}

TEST_F(StartupFlagsTest, LoraDtypeTheModelCannotTake) {
  EXPECT_THAT(Refusal("--lora_dtype=int8"), HasSubstr("--lora_dtype must be auto, float32, bfloat16 or float16"));
  EXPECT_THAT(Refusal("--dtype=bfloat16 --lora_dtype=float16"),
              HasSubstr("--lora_dtype=float16 on a bfloat16 model on cpu: LoRA weights take the model's dtype"));
}

TEST_F(StartupFlagsTest, NegativeMemoryToKeep) {
  EXPECT_THAT(Refusal("--keep_freed_mb=-1"), HasSubstr("--keep_freed_mb must be at least 0"));
}

TEST_F(StartupFlagsTest, AdapterSlotPoolTheMachineCannotHold) {
  // 10^12 slots of the demo model: petabytes, which the allocator refuses.
  const std::string out = Refusal("--adapter_slots=1000000000000");
  EXPECT_THAT(out, HasSubstr("--adapter_slots=1000000000000 with --adapter_slot_rank=16 needs"));
  EXPECT_THAT(out, HasSubstr("bytes on cpu, which could not be allocated"));
  EXPECT_THAT(Refusal("--adapter_slots=4611686018427387904"), HasSubstr("more bytes than a device can address"));
  EXPECT_THAT(Refusal("--adapter_slots=-1"), HasSubstr("--adapter_slots must be >= 0"));
  EXPECT_THAT(Refusal("--adapter_slots=2 --adapter_slot_rank=0"), HasSubstr("--adapter_slot_rank must be >= 1"));
}

TEST_F(StartupFlagsTest, WeightBudgetBelowTheCheckpoint) {
  const std::string out = Refusal("--max_weight_bytes=1000");
  EXPECT_THAT(out, HasSubstr("the base model's weights need"));
  EXPECT_THAT(out, HasSubstr("over the weight budget of 1000 bytes (--max_weight_bytes) on cpu"));
  EXPECT_THAT(Refusal("--max_weight_bytes=-1"), HasSubstr("--max_weight_bytes must be >= 0"));
}

TEST_F(StartupFlagsTest, KvBudgetTheMachineCannotHold) {
  // 2^62 bytes: more blocks than block ids can number, refused before any
  // allocation is tried.
  const std::string out = Refusal("--kv_cache_bytes=4611686018427387904");
  EXPECT_THAT(out, HasSubstr("the KV cache budget (--kv_cache_bytes / --kv_cache_mb) on cpu"));
  EXPECT_THAT(out, HasSubstr("more than block ids can number"));
  EXPECT_THAT(Refusal("--kv_cache_bytes=100"), HasSubstr("is below one block"));
  EXPECT_THAT(Refusal("--kv_cache_bytes=-5"), HasSubstr("--kv_cache_bytes must be >= 0"));
}

}  // namespace
}  // namespace adapterd
