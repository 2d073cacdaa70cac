// The AdapterRegistry tests' fixture: the demo base, a registry per test,
// and helpers that load and wait. Shared by adapter_registry_test.cc and
// adapter_registry_failed_load_test.cc; header-only.
#ifndef ADAPTERD_TESTS_SUPPORT_ADAPTER_REGISTRY_FIXTURE_H_
#define ADAPTERD_TESTS_SUPPORT_ADAPTER_REGISTRY_FIXTURE_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "adapters/adapter_registry.h"
#include "tests/support/demo_model.h"
#include "tests/support/wait.h"

namespace adapterd::adapters::registry_test {

using testing::QvLora;


inline constexpr int64_t kLayers = 4;
inline constexpr int64_t kQvBytes = 57344;  // q,v r=4 over 4 layers, float32
inline const absl::Duration kLoadTimeout = absl::Seconds(120);

// What the registry lists, reduced to comparable values.
inline std::vector<std::string> Snapshot(const std::vector<AdapterInfo>& list) {
  std::vector<std::string> out;
  for (const AdapterInfo& i : list) {
    out.push_back(absl::StrCat(i.id, "|", std::string(AdapterStateName(i.state)), "|", i.summary.type, "|", i.bytes,
                               "|", i.source));
  }
  return out;
}

// live_bytes() once it reaches `want`, or after 10 s. The loader thread may
// still be finishing the iteration that ran a LoadDone callback (see
// LoadDoneRunsAfterTheReplacedVersionIsReleased for the strict check).
inline int64_t SettledLiveBytes(const AdapterRegistry& r, int64_t want) {
  testing::PollUntil([&] { return r.live_bytes() == want; }, absl::StrCat("live_bytes() to reach ", want),
                     absl::Seconds(10));
  return r.live_bytes();
}

// Frees `n` on scope exit so that a failing test never leaves the loader
// thread blocked in a callback.
struct NotifyOnExit {
  std::shared_ptr<absl::Notification> n;
  ~NotifyOnExit() {
    if (!n->HasBeenNotified()) n->Notify();
  }
};

// A fresh AdapterRegistry over the demo base per test, a q/v LoRA written
// once per binary (qv_dir()), and Load(), which starts a load and waits for
// its LoadDone. Not thread-safe beyond what AdapterRegistry itself allows.
class AdapterRegistryTest : public testing::DemoModelTest {
 protected:
  static void SetUpTestSuite() {
    DemoModelTest::SetUpTestSuite();
    qv_dir_ = new std::string(QvLora().Write("qv-shared"));
  }
  static void TearDownTestSuite() {
    DemoModelTest::TearDownTestSuite();
    delete qv_dir_;
    qv_dir_ = nullptr;
  }
  void SetUp() override {
    DemoModelTest::SetUp();
    if (HasFatalFailure()) return;
    registry_ = std::make_unique<AdapterRegistry>(base_);
  }
  void TearDown() override {
    registry_.reset();
  }

  AdapterRegistry& reg() { return *registry_; }
  static const std::string& qv_dir() { return *qv_dir_; }

  // Starts a load and waits for its LoadDone. A StartLoad error is returned as is.
  static absl::StatusOr<AdapterInfo> Load(AdapterRegistry& r, const std::string& id, AdapterSource source,
                                          bool replace = false) {
    struct State {
      absl::Notification done;
      absl::StatusOr<AdapterInfo> result = absl::UnknownError("LoadDone not called");
    };
    auto state = std::make_shared<State>();
    absl::Status started = r.StartLoad(id, std::move(source), replace, [state](absl::StatusOr<AdapterInfo> res) {
      state->result = std::move(res);
      state->done.Notify();
    });
    if (!started.ok()) return started;
    if (!state->done.WaitForNotificationWithTimeout(kLoadTimeout)) {
      return absl::DeadlineExceededError("LoadDone not called in time");
    }
    return state->result;
  }
  absl::StatusOr<AdapterInfo> Load(const std::string& id, AdapterSource source, bool replace = false) {
    return Load(reg(), id, std::move(source), replace);
  }

  // Last-token logits [1, vocab] of a fixed prompt through the base with `adapter` (null = base).
  static at::Tensor Logits(const model::AdapterWeights* adapter) { return testing::PromptLogits(base(), adapter); }

  inline static std::string* qv_dir_ = nullptr;
  std::unique_ptr<AdapterRegistry> registry_;
};

}  // namespace adapterd::adapters::registry_test

#endif  // ADAPTERD_TESTS_SUPPORT_ADAPTER_REGISTRY_FIXTURE_H_
