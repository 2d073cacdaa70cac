// Helpers shared by adapterd's tests: paths, subprocesses, the reference
// Python stack, and a real server process on loopback.
#ifndef ADAPTERD_TESTS_SUPPORT_TEST_ENV_H_
#define ADAPTERD_TESTS_SUPPORT_TEST_ENV_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace adapterd::testing {

std::string SourceDir();
std::string BinaryDir();
// A fresh, empty directory under the test temp dir, removed when the test
// binary exits with every test passed (kept after a failure, or with
// ADAPTERD_KEEP_TEST_TMP set).
std::string MakeTempDir(const std::string& name);

// Runs a shell command; returns its combined stdout+stderr, or an error with
// that output when it exits non-zero.
absl::StatusOr<std::string> RunCommand(const std::string& command);

// The reference venv's python, or an error explaining why it is unusable.
absl::StatusOr<std::string> ReferencePython();
// True when ADAPTERD_OFFLINE=1 asks to skip tests that need the reference
// stack. Never true in CI (CI=true): there a missing reference stack fails
// the tests instead of skipping them, so CI cannot pass by skipping.
bool OfflineRequested();
// True when the environment says this is a CI run (CI=true).
bool InCi();
// Runs tests/conformance/hf_reference.py with `args` in the reference venv.
absl::StatusOr<std::string> RunReference(const std::string& args);

// Skips the test (printing why) under ADAPTERD_OFFLINE=1 outside CI;
// otherwise fails it when the reference stack is missing.
#define ADAPTERD_REQUIRE_REFERENCE()                                                   \
  do {                                                                                 \
    if (::adapterd::testing::OfflineRequested()) {                                     \
      if (::adapterd::testing::InCi()) {                                        \
        FAIL() << "CI=true: this test needs the reference stack, and ADAPTERD_OFFLINE=1 " \
                  "may not skip it under CI";                                          \
      }                                                                                \
      GTEST_SKIP() << "ADAPTERD_OFFLINE=1: reference (transformers/peft) test skipped"; \
    }                                                                                  \
    auto _py = ::adapterd::testing::ReferencePython();                                 \
    ASSERT_TRUE(_py.ok()) << _py.status()                                              \
                          << " -- run ./x setup, or set ADAPTERD_OFFLINE=1 to skip";   \
  } while (0)

// A real adapterd process listening on 127.0.0.1 with OS-chosen ports.
class ServerProcess {
 public:
  // Starts build/server/adapterd with `args` plus listen (gRPC and HTTP),
  // metrics and ready-file flags, and waits until it is ready. Unless `args` say
  // otherwise, it serves plaintext with an open Admin API and path loads
  // from any directory, and without --model the random demo model
  // (--demo_trained=false).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::vector<std::string>& args, absl::Duration timeout = absl::Seconds(120));
  ~ServerProcess();

  const std::string& grpc_address() const { return grpc_; }
  const std::string& metrics_address() const { return metrics_; }
  const std::string& admin_address() const { return admin_; }
  // The OpenAI-compatible HTTP API's address ("" when it is off).
  const std::string& http_address() const { return http_; }
  pid_t pid() const { return pid_; }
  // Sends `signal` (0: none, only waits) and waits for the exit; returns the
  // exit code (or 128+signal).
  int Stop(int signal, absl::Duration timeout = absl::Seconds(60));
  // The server's stderr so far.
  std::string Log() const;

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  std::string grpc_, metrics_, admin_, http_, log_path_;
};

// ServerProcess::Start on the demo model, generated once per test process
// into a shared temporary cache, without the demo adapters.
absl::StatusOr<std::unique_ptr<ServerProcess>> StartDemoServer(std::vector<std::string> args);

// GET http://host:port/path over loopback; returns the body.
absl::StatusOr<std::string> HttpGet(const std::string& host_port, const std::string& path);

// The sum of every sample of metric `name` (all label sets) in a Prometheus
// text exposition; NOT_FOUND when there is none.
absl::StatusOr<double> MetricSum(const std::string& exposition, const std::string& name);

// The resident set size of process `pid`, in bytes, from /proc.
absl::StatusOr<int64_t> ResidentBytes(pid_t pid);
// How many file descriptors process `pid` has open.
absl::StatusOr<int64_t> OpenFds(pid_t pid);

}  // namespace adapterd::testing

#endif  // ADAPTERD_TESTS_SUPPORT_TEST_ENV_H_
