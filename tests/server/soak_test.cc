// A soak against the real server on loopback: a load/unload storm of
// uploaded adapters while clients generate (some going away mid-stream)
// and bursts overflow the queue. It runs for ADAPTERD_SOAK_SECONDS (default
// 60) and until the storm has done ADAPTERD_SOAK_CYCLES load/unload cycles
// (default 2000), bounded by the seconds plus 300. It checks that the server
// never crashes, only expected status codes occur, a steady adapter's
// tokens never change, and resident memory and open descriptors stay flat
// after warm-up (within 5%). With ADAPTERD_SOAK_REPORT set it writes a JSON
// report there (bench/soak/run.sh runs the long version).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/demo_checkpoint.h"
#include "tests/fakes/fake_adapter.h"
#include "tests/support/clients.h"
#include "tests/support/test_env.h"

namespace adapterd {
namespace {

int64_t EnvInt(const char* name, int64_t fallback) {
  int64_t v = 0;
  const char* s = std::getenv(name);
  return s != nullptr && absl::SimpleAtoi(s, &v) && v > 0 ? v : fallback;
}

// Status counts by code name, shared by the client threads.
class Tally {
 public:
  void Add(const std::string& what, const grpc::Status& st) {
    absl::MutexLock lock(&mu_);
    ++counts_[what][CodeName(st.error_code())];
    if (!st.ok() && seen_[what].insert(st.error_message()).second && examples_.size() < 20) examples_.push_back(absl::StrCat(what, ": ", st.error_message()));
  }
  nlohmann::json Json() const {
    absl::MutexLock lock(&mu_);
    return counts_;
  }
  std::vector<std::string> examples() const {
    absl::MutexLock lock(&mu_);
    return examples_;
  }
  static std::string CodeName(grpc::StatusCode c) {
    static const char* names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                  "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                  "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                  "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
    const int i = static_cast<int>(c);
    return i >= 0 && i <= 16 ? names[i] : absl::StrCat(i);
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::map<std::string, int64_t>> counts_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> examples_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::set<std::string>> seen_ ABSL_GUARDED_BY(mu_);
};

int64_t Median(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

TEST(SoakTest, LoadUnloadStormWithGenerationStaysFlat) {
  const int64_t seconds = EnvInt("ADAPTERD_SOAK_SECONDS", 60);
  const int64_t min_cycles = EnvInt("ADAPTERD_SOAK_CYCLES", 2000);
  const std::string cache = testing::MakeTempDir("soak-cache");
  ASSERT_TRUE(model::EnsureDemoCheckpoint(cache).ok());
  auto server = testing::ServerProcess::Start({"--cache_dir=" + cache, "--demo_adapters=false",
                                               "--max_batch_size=16", "--max_waiting=24",
                                               "--adapter_store=" + testing::MakeTempDir("soak-store")});
  ASSERT_TRUE(server.ok()) << server.status();
  const pid_t pid = (*server)->pid();
  auto ch = testing::Connect((*server)->grpc_address());
  auto admin = v1::Admin::NewStub(ch);
  auto inf = v1::Inference::NewStub(ch);
  const std::vector<uint32_t> prompt = {4, 8, 15, 16, 23, 42};
  ASSERT_TRUE(testing::UploadFiles(*admin, "steady", testing::QvLora(5).Files()).ok());
  testing::StreamResult ref = testing::StreamTokens(*inf, testing::GreedyRequest("steady", prompt, 16));
  ASSERT_TRUE(ref.status.ok());
  std::vector<std::map<std::string, std::string>> storm_files;
  for (uint32_t s = 0; s < 4; ++s) storm_files.push_back(testing::QvLora(100 + s).Files());

  Tally tally;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> cycles{0}, wrong_tokens{0};
  std::vector<std::thread> threads;
  // The storm: upload then unload, over a few ids, as fast as it goes.
  threads.emplace_back([&] {
    for (int64_t k = 0; !stop; ++k) {
      const std::string id = absl::StrCat("storm-", k % 4);
      grpc::Status up = testing::UploadFiles(*admin, id, storm_files[k % 4]);
      tally.Add("upload", up);
      grpc::Status down = testing::Unload(*admin, id);
      tally.Add("unload", down);
      if (up.ok() && down.ok()) ++cycles;
    }
  });
  // Generators: the steady adapter (checked), the base, storm adapters
  // that may be gone (NOT_FOUND), and one client in five leaving early.
  for (int g = 0; g < 3; ++g) {
    threads.emplace_back([&, g] {
      for (int64_t i = 0; !stop; ++i) {
        const int kind = static_cast<int>((i + g) % 5);
        const std::string adapter = kind == 0 ? "steady" : kind == 1 ? "" : absl::StrCat("storm-", i % 4);
        testing::StreamResult r = testing::StreamTokens(
            *inf, testing::GreedyRequest(adapter, prompt, kind == 0 ? 16 : 8 + static_cast<int>(i % 24)), kind == 4);
        tally.Add(kind == 4 ? "generate-abandoned" : "generate", r.status);
        if (kind == 0 && r.status.ok() && r.tokens != ref.tokens) ++wrong_tokens;
      }
    });
  }
  // Bursts beyond the queue, every few seconds.
  threads.emplace_back([&] {
    while (!stop) {
      std::vector<std::thread> burst;
      for (int c = 0; c < 48; ++c) {
        burst.emplace_back([&] {
          tally.Add("burst", testing::StreamTokens(*inf, testing::GreedyRequest("", prompt, 4)).status);
        });
      }
      for (auto& t : burst) t.join();
      for (int i = 0; i < 30 && !stop; ++i) absl::SleepFor(absl::Milliseconds(100));
    }
  });

  struct Sample {
    double t;
    int64_t rss, fds;
  };
  std::vector<Sample> samples;
  const absl::Time start = absl::Now();
  const absl::Time cap = start + absl::Seconds(seconds + 300);
  bool alive = true;
  while (absl::Now() < cap) {
    absl::SleepFor(absl::Seconds(1));
    auto rss = testing::ResidentBytes(pid);
    auto fds = testing::OpenFds(pid);
    if (!rss.ok() || !fds.ok()) {
      alive = false;
      break;
    }
    samples.push_back({absl::ToDoubleSeconds(absl::Now() - start), *rss, *fds});
    if (absl::Now() - start >= absl::Seconds(seconds) && cycles >= min_cycles) break;
  }
  stop = true;
  for (auto& t : threads) t.join();
  ASSERT_TRUE(alive) << "the server died during the soak\n" << (*server)->Log();

  // Warm-up is the first third; compare the medians of the 5 samples after
  // it with those of the last 5.
  const size_t warm = samples.size() / 3;
  ASSERT_GE(samples.size(), warm + 10);
  std::vector<int64_t> rss_warm, rss_end, fds_warm, fds_end;
  for (size_t i = warm; i < warm + 5; ++i) {
    rss_warm.push_back(samples[i].rss);
    fds_warm.push_back(samples[i].fds);
  }
  for (size_t i = samples.size() - 5; i < samples.size(); ++i) {
    rss_end.push_back(samples[i].rss);
    fds_end.push_back(samples[i].fds);
  }
  const double growth = static_cast<double>(Median(rss_end)) / static_cast<double>(Median(rss_warm)) - 1;
  nlohmann::json report = {
      {"seconds", absl::ToDoubleSeconds(absl::Now() - start)},
      {"storm_cycles", cycles.load()},
      {"status_counts", tally.Json()},
      {"rss_after_warmup_bytes", Median(rss_warm)},
      {"rss_end_bytes", Median(rss_end)},
      {"rss_growth_after_warmup", growth},
      {"fds_after_warmup", Median(fds_warm)},
      {"fds_end", Median(fds_end)},
      {"wrong_tokens", wrong_tokens.load()},
      {"error_examples", tally.examples()},
  };
  std::cout << "soak report: " << report.dump() << "\n";
  nlohmann::json series = nlohmann::json::array();
  for (const Sample& s : samples) series.push_back({{"t", s.t}, {"rss_bytes", s.rss}, {"fds", s.fds}});
  report["samples"] = series;
  if (const char* path = std::getenv("ADAPTERD_SOAK_REPORT"); path && *path) {
    std::ofstream(path) << report.dump(2) << "\n";
  }

  EXPECT_GE(cycles.load(), min_cycles);
  EXPECT_EQ(wrong_tokens.load(), 0);
  EXPECT_LE(growth, 0.05) << "resident memory grew after warm-up";
  EXPECT_LE(Median(fds_end), Median(fds_warm) + 8) << "file descriptors grew";
  // Only the outcomes this workload can cause.
  const std::map<std::string, std::vector<std::string>> allowed = {
      {"upload", {"OK"}},
      {"unload", {"OK"}},
      {"generate", {"OK", "NOT_FOUND", "UNAVAILABLE", "RESOURCE_EXHAUSTED"}},
      {"generate-abandoned", {"CANCELLED", "OK", "NOT_FOUND", "UNAVAILABLE", "RESOURCE_EXHAUSTED"}},
      {"burst", {"OK", "RESOURCE_EXHAUSTED"}},
  };
  const nlohmann::json counts = tally.Json();
  for (const auto& [what, codes] : counts.items()) {
    for (const auto& [code, n] : codes.items()) {
      const std::vector<std::string>& ok = allowed.at(what);
      EXPECT_NE(std::find(ok.begin(), ok.end(), code), ok.end()) << what << " got " << code << " x" << n;
    }
  }
  EXPECT_EQ((*server)->Stop(SIGTERM), 0) << (*server)->Log();
}

}  // namespace
}  // namespace adapterd
