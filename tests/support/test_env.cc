#include "tests/support/test_env.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/demo_checkpoint.h"

namespace adapterd::testing {

namespace fs = std::filesystem;

std::string SourceDir() { return ADAPTERD_SOURCE_DIR; }
std::string BinaryDir() { return ADAPTERD_BINARY_DIR; }

namespace {

// The directories MakeTempDir made in this process, removed when the
// process exits after every test passed (kept for a look otherwise, or
// when ADAPTERD_KEEP_TEST_TMP is set). Only the process that made them
// removes them: a forked child's exit never does.
class TempDirs {
 public:
  ~TempDirs() {
    if (getpid() != owner_ || std::getenv("ADAPTERD_KEEP_TEST_TMP") != nullptr) return;
    if (!::testing::UnitTest::GetInstance()->Passed()) return;
    absl::MutexLock lock(&mu_);
    for (const fs::path& p : dirs_) {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  }

  void Add(fs::path p) {
    absl::MutexLock lock(&mu_);
    dirs_.push_back(std::move(p));
  }

 private:
  const pid_t owner_ = getpid();
  absl::Mutex mu_;
  std::vector<fs::path> dirs_ ABSL_GUARDED_BY(mu_);
};

TempDirs& MadeTempDirs() {
  static TempDirs dirs;
  return dirs;
}

}  // namespace

std::string MakeTempDir(const std::string& name) {
  static std::atomic<int> counter{0};
  fs::path p = fs::path(::testing::TempDir()) /
               absl::StrCat("adapterd-", getpid(), "-", counter++, "-", name);
  fs::remove_all(p);
  fs::create_directories(p);
  MadeTempDirs().Add(p);
  return p.string();
}

absl::StatusOr<std::string> RunCommand(const std::string& command) {
  FILE* f = popen((command + " 2>&1").c_str(), "r");
  if (f == nullptr) return absl::InternalError(absl::StrCat("popen failed: ", command));
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const int rc = pclose(f);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("command failed (", rc, "): ", command, "\n", out));
  }
  return out;
}

bool InCi() {
  const char* v = std::getenv("CI");
  return v != nullptr && (std::string(v) == "true" || std::string(v) == "1");
}

bool OfflineRequested() {
  const char* v = std::getenv("ADAPTERD_OFFLINE");
  return v != nullptr && std::string(v) == "1" && !InCi();
}

absl::StatusOr<std::string> ReferencePython() {
  std::string py = ADAPTERD_REF_PYTHON;
  if (const char* env = std::getenv("ADAPTERD_REF_PYTHON"); env && *env) py = env;
  if (py.empty() || !fs::exists(py)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the reference venv (transformers, peft) is not installed at '", py,
        "'; it could not be built, e.g. because PyPI was unreachable"));
  }
  absl::StatusOr<std::string> check =
      RunCommand(absl::StrCat(py, " -c 'import transformers, peft, safetensors'"));
  if (!check.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the reference venv at ", py, " is broken: ", check.status().message()));
  }
  return py;
}

absl::StatusOr<std::string> RunReference(const std::string& args) {
  absl::StatusOr<std::string> py = ReferencePython();
  if (!py.ok()) return py.status();
  return RunCommand(absl::StrCat(*py, " ", SourceDir(), "/tests/conformance/hf_reference.py ",
                                 args));
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& args, absl::Duration timeout) {
  auto p = std::unique_ptr<ServerProcess>(new ServerProcess());
  const std::string dir = MakeTempDir("server");
  const std::string ready = dir + "/ready.json";
  p->log_path_ = dir + "/server.log";
  std::vector<std::string> argv = {BinaryDir() + "/server/adapterd", "--listen=127.0.0.1:0",
                                   "--metrics_listen=127.0.0.1:0", "--ready_file=" + ready,
                                   "--threads=2"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto given = [&](std::initializer_list<const char*> flags) {
    for (const auto& a : args) {
      for (const char* f : flags) {
        if (a.rfind(f, 0) == 0) return true;
      }
    }
    return false;
  };
  if (!given({"--cache_dir"})) argv.push_back("--cache_dir=" + MakeTempDir("cache"));
  // Tests that need some model get the random demo, made in a second; the
  // trained one (a minute) only when they ask for it.
  if (!given({"--model", "--demo_trained"})) argv.push_back("--demo_trained=false");
  if (!given({"--http_listen"})) argv.push_back("--http_listen=127.0.0.1:0");
  // Tests that are not about security run the way a developer would on
  // loopback: plaintext, an open Admin API, and path loads from anywhere.
  if (!given({"--plaintext", "--tls_cert_file"})) argv.push_back("--plaintext");
  if (!given({"--admin_auth", "--admin_token_file", "--admin_client_names"})) argv.push_back("--admin_auth=none");
  if (!given({"--adapter_roots"})) argv.push_back("--adapter_roots=/");

  p->pid_ = fork();
  if (p->pid_ < 0) return absl::InternalError("fork failed");
  if (p->pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a killed test
    int fd = open(p->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int status;
    if (waitpid(p->pid_, &status, WNOHANG) == p->pid_) {
      p->pid_ = -1;
      return absl::InternalError(absl::StrCat("adapterd exited during start-up:\n", p->Log()));
    }
    if (fs::exists(ready)) {
      std::ifstream in(ready);
      nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
      if (!j.is_discarded()) {
        p->grpc_ = j["grpc"].get<std::string>();
        p->metrics_ = j["metrics"].get<std::string>();
        p->admin_ = j["admin"].get<std::string>();
        p->http_ = j.value("http", "");
        return p;
      }
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat("adapterd not ready in time:\n", p->Log()));
}

absl::StatusOr<std::unique_ptr<ServerProcess>> StartDemoServer(std::vector<std::string> args) {
  static const std::string* cache = [] {
    auto* d = new std::string(MakeTempDir("demo-server-cache"));
    EXPECT_TRUE(model::EnsureDemoCheckpoint(*d).ok());
    return d;
  }();
  args.push_back("--cache_dir=" + *cache);
  args.push_back("--demo_adapters=false");
  return ServerProcess::Start(args);
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) Stop(SIGKILL);
}

int ServerProcess::Stop(int signal, absl::Duration timeout) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (absl::Now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

std::string ServerProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::string> HttpGet(const std::string& host_port, const std::string& path) {
  std::vector<std::string> parts = absl::StrSplit(host_port, ':');
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad address ", host_port));
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", host_port));
  }
  const std::string req = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  (void)!write(fd, req.data(), req.size());
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) resp.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = resp.find("\r\n\r\n");
  if (body == std::string::npos) return absl::InternalError("malformed HTTP response");
  if (resp.rfind("HTTP/1.1 200", 0) != 0 && resp.rfind("HTTP/1.0 200", 0) != 0) {
    return absl::InternalError(absl::StrCat("HTTP error: ", resp.substr(0, resp.find('\r'))));
  }
  return resp.substr(body + 4);
}

absl::StatusOr<double> MetricSum(const std::string& exposition, const std::string& name) {
  double sum = 0;
  bool found = false;
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.compare(0, name.size(), name) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    const size_t space = line.rfind(' ');
    double v = 0;
    if (space == std::string::npos || !absl::SimpleAtod(line.substr(space + 1), &v)) continue;
    sum += v;
    found = true;
  }
  if (!found) return absl::NotFoundError(absl::StrCat("metric ", name, " not in the exposition"));
  return sum;
}

absl::StatusOr<int64_t> ResidentBytes(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    int64_t kb = 0;
    if (line.rfind("VmRSS:", 0) == 0 &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::StripSuffix(line.substr(6), "kB")), &kb)) {
      return kb * 1024;
    }
  }
  return absl::NotFoundError(absl::StrCat("no VmRSS for process ", pid));
}

absl::StatusOr<int64_t> OpenFds(pid_t pid) {
  std::error_code ec;
  int64_t n = 0;
  for (auto it = fs::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  if (ec) return absl::NotFoundError(absl::StrCat("cannot list /proc/", pid, "/fd: ", ec.message()));
  return n;
}

}  // namespace adapterd::testing
