// In CI a conformance test may not skip: ADAPTERD_OFFLINE=1 is ignored there.
#include "tests/support/test_env.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace adapterd::testing {
namespace {

// Sets an environment variable for one scope, restoring it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    had_ = std::getenv(name) != nullptr;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(TestEnvTest, OfflineSkipsOnlyOutsideCi) {
  ScopedEnv offline("ADAPTERD_OFFLINE", "1");
  {
    ScopedEnv ci("CI", nullptr);
    EXPECT_TRUE(OfflineRequested());
  }
  {
    ScopedEnv ci("CI", "true");
    EXPECT_TRUE(InCi());
    EXPECT_FALSE(OfflineRequested()) << "CI must fail, not skip, without the reference stack";
  }
}

}  // namespace
}  // namespace adapterd::testing
