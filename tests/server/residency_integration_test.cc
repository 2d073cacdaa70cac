// Residency through the real server on loopback: byte budgets that send
// idle adapters to host memory and disk, on-demand loads that give the same
// tokens, tiers in ListAdapters and /metrics, pins, offloading with
// keep_on_disk, and a restart that registers everything again.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/clients.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

using testing::StreamResult;

const std::vector<uint32_t> kPrompt = {7, 3, 19, 11, 5};
constexpr int64_t kQvBytes = 57344;  // q,v r=4 over the demo model's 4 layers, float32

absl::StatusOr<std::unique_ptr<testing::ServerProcess>> StartServer(std::vector<std::string> args) {
  return testing::StartDemoServer(std::move(args));
}

std::map<std::string, v1::AdapterInfo> List(v1::Admin::Stub& admin) {
  grpc::ClientContext ctx;
  v1::ListAdaptersResponse resp;
  EXPECT_TRUE(admin.ListAdapters(&ctx, v1::ListAdaptersRequest(), &resp).ok());
  std::map<std::string, v1::AdapterInfo> out;
  for (const auto& a : resp.adapters()) out[a.adapter_id()] = a;
  return out;
}

int Count(const std::map<std::string, v1::AdapterInfo>& list, const std::string& tier) {
  int n = 0;
  for (const auto& [id, a] : list) n += a.tier() == tier;
  return n;
}

// The nice values of the process's threads (field 19 of /proc/PID/task/TID/stat).
std::vector<int> ThreadNiceValues(pid_t pid) {
  std::vector<int> out;
  for (const auto& task : std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"))) {
    std::ifstream f(task.path() / "stat");
    std::string line;
    std::getline(f, line);
    const size_t paren = line.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream fields(line.substr(paren + 2));
    std::string field;
    for (int i = 3; i <= 19 && fields >> field; ++i) {
      if (i == 19) out.push_back(std::stoi(field));
    }
  }
  return out;
}

TEST(ResidencyTest, LoaderNiceIsCheckedAndApplied) {
  for (const char* bad : {"--adapter_loader_nice=20", "--adapter_loader_nice=-1"}) {
    auto s = StartServer({bad});
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_THAT(s.status().message(), ::testing::HasSubstr("--adapter_loader_nice")) << bad;
  }
  auto server = StartServer({"--adapter_loader_nice=7"});
  ASSERT_TRUE(server.ok()) << server.status();
  // Only the loader thread lowers its priority; it does so as it starts.
  bool found = false;
  for (int i = 0; i < 100 && !found; ++i) {
    for (int nice : ThreadNiceValues((*server)->pid())) found |= nice == 7;
    if (!found) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(found) << "no thread of the server runs at nice 7";
}

TEST(ResidencyTest, BudgetsTiersOffloadPinsAndRestart) {
  const std::string store = testing::MakeTempDir("residency-store");
  const std::vector<std::string> flags = {"--adapter_store=" + store,
                                          absl::StrCat("--adapter_device_bytes=", 2 * kQvBytes)};
  auto server = StartServer(flags);
  ASSERT_TRUE(server.ok()) << server.status();
  std::map<std::string, std::vector<uint32_t>> want;
  {
    auto ch = testing::Connect((*server)->grpc_address());
    auto admin = v1::Admin::NewStub(ch);
    auto inf = v1::Inference::NewStub(ch);
    for (int i = 0; i < 4; ++i) {
      const std::string id = absl::StrCat("a", i);
      ASSERT_TRUE(testing::UploadFiles(*admin, id, testing::QvLora(20 + i).Files()).ok()) << id;
    }
    auto list = List(*admin);
    ASSERT_EQ(list.size(), 4u);
    EXPECT_EQ(Count(list, "device"), 2);
    EXPECT_EQ(Count(list, "host"), 2);
    // Each adapter answers, twice round, evicting the others as it comes in;
    // the second round must repeat the first.
    for (int round = 0; round < 2; ++round) {
      for (int i = 0; i < 4; ++i) {
        const std::string id = absl::StrCat("a", i);
        StreamResult r = testing::StreamTokens(*inf, testing::GreedyRequest(id, kPrompt, 8));
        ASSERT_TRUE(r.status.ok()) << id << ": " << r.status.error_message();
        if (round == 0) {
          want[id] = r.tokens;
        } else {
          EXPECT_EQ(r.tokens, want[id]) << id << " after it was evicted and brought back";
        }
        EXPECT_EQ(List(*admin)[id].tier(), "device");
      }
    }
    EXPECT_NE(want["a0"], want["a1"]);
    auto m = testing::HttpGet((*server)->metrics_address(), "/metrics");
    ASSERT_TRUE(m.ok());
    EXPECT_LE(*testing::MetricSum(*m, "adapterd_adapter_tier_bytes{tier=\"device\"}"), 2 * kQvBytes);
    EXPECT_GE(*testing::MetricSum(*m, "adapterd_adapter_cache_misses_total"), 6);
    EXPECT_GE(*testing::MetricSum(*m, "adapterd_adapter_evictions_total{from_tier=\"device\"}"), 6);
    EXPECT_THAT(*m, ::testing::HasSubstr("adapterd_adapter_resident{adapter=\"a3\",tier=\"device\"} 1"));
    EXPECT_THAT(*m, ::testing::HasSubstr("adapterd_adapter_resident{adapter=\"a0\",tier=\"host\"} 1"));

    // Offload: registered, out of memory, loaded again on the next request.
    ASSERT_TRUE(testing::Unload(*admin, "a3", /*keep_on_disk=*/true).ok());
    EXPECT_EQ(List(*admin)["a3"].tier(), "disk");
    StreamResult r = testing::StreamTokens(*inf, testing::GreedyRequest("a3", kPrompt, 8));
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens, want["a3"]);
    grpc::Status st = testing::Unload(*admin, "missing", /*keep_on_disk=*/true);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();

    // A pin stays on the device however the others come and go.
    ASSERT_TRUE(testing::UploadFiles(*admin, "pinned", testing::QvLora(40).Files(), 64 << 10, /*pin=*/true).ok());
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(testing::StreamTokens(*inf, testing::GreedyRequest(absl::StrCat("a", i), kPrompt, 2)).status.ok());
      EXPECT_EQ(List(*admin)["pinned"].tier(), "device");
    }
    EXPECT_TRUE(List(*admin)["pinned"].pinned());
    st = testing::Unload(*admin, "pinned", /*keep_on_disk=*/true);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
    EXPECT_EQ(List(*admin).size(), 5u);
  }
  ASSERT_EQ((*server)->Stop(SIGTERM), 0);
  server = StartServer(flags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto ch = testing::Connect((*server)->grpc_address());
  auto admin = v1::Admin::NewStub(ch);
  auto inf = v1::Inference::NewStub(ch);
  auto list = List(*admin);
  EXPECT_EQ(list.size(), 5u);
  EXPECT_TRUE(list["pinned"].pinned());
  EXPECT_EQ(list["pinned"].tier(), "device");
  for (const auto& [id, tokens] : want) {
    StreamResult r = testing::StreamTokens(*inf, testing::GreedyRequest(id, kPrompt, 8));
    ASSERT_TRUE(r.status.ok()) << id << ": " << r.status.error_message();
    EXPECT_EQ(r.tokens, tokens) << id << " after restart";
  }
}

// Adapters in a slot pool give the tokens they give with tensors of their
// own, through evictions and loads back from host memory, and the pool's
// gauge counts what holds a slot.
TEST(ResidencyTest, SlotPoolGivesTheSameTokensThroughEvictions) {
  auto tokens_of = [](const std::vector<std::string>& flags, std::map<std::string, std::vector<uint32_t>>& out,
                      std::string* metrics) {
    auto server = StartServer(flags);
    ASSERT_TRUE(server.ok()) << server.status();
    auto ch = testing::Connect((*server)->grpc_address());
    auto admin = v1::Admin::NewStub(ch);
    auto inf = v1::Inference::NewStub(ch);
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(testing::UploadFiles(*admin, absl::StrCat("s", i), testing::QvLora(60 + i).Files()).ok());
    }
    for (int round = 0; round < 2; ++round) {
      for (int i = 0; i < 4; ++i) {
        const std::string id = absl::StrCat("s", i);
        StreamResult r = testing::StreamTokens(*inf, testing::GreedyRequest(id, kPrompt, 8));
        ASSERT_TRUE(r.status.ok()) << id << ": " << r.status.error_message();
        if (round == 0) out[id] = r.tokens;
        EXPECT_EQ(r.tokens, out[id]) << id << " in round " << round;
      }
    }
    if (metrics != nullptr) {
      auto m = testing::HttpGet((*server)->metrics_address(), "/metrics");
      ASSERT_TRUE(m.ok());
      *metrics = *m;
    }
    ASSERT_EQ((*server)->Stop(SIGTERM), 0);
  };
  const std::string budget = absl::StrCat("--adapter_device_bytes=", 2 * kQvBytes);
  std::map<std::string, std::vector<uint32_t>> own, pooled;
  tokens_of({budget}, own, nullptr);
  std::string m;
  tokens_of({budget, "--adapter_slots=2", "--adapter_slot_rank=8"}, pooled, &m);
  EXPECT_EQ(pooled, own);
  EXPECT_NE(own["s0"], own["s1"]);
  absl::StatusOr<double> used = testing::MetricSum(m, "adapterd_adapter_slots{state=\"used\"}");
  absl::StatusOr<double> free = testing::MetricSum(m, "adapterd_adapter_slots{state=\"free\"}");
  ASSERT_TRUE(used.ok() && free.ok()) << m;
  EXPECT_EQ(*used + *free, 2);
  EXPECT_GE(*used, 1);  // the adapters loaded back from host memory took the free slots
  absl::StatusOr<double> evictions = testing::MetricSum(m, "adapterd_adapter_evictions_total{from_tier=\"device\"}");
  ASSERT_TRUE(evictions.ok());
  EXPECT_GE(*evictions, 4);
}

}  // namespace
}  // namespace adapterd
