#include "server/core/trained_demo.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>
#include <system_error>
#include <thread>

#include "absl/log/log.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "adapters/demo_adapters.h"
#include "server/common/compute_threads.h"
#include "server/common/heap_retention.h"
#include "server/core/demo_corpus.h"
#include "server/core/demo_tokenizer.h"
#include "server/core/prompt_builder.h"
#include "server/model/demo_checkpoint.h"

namespace adapterd::core {
namespace {

namespace fs = std::filesystem;

// Bump when the trainer, the text it learns from or the file layout changes.
constexpr char kTrainerVersion[] = "demo-trained-v2";
constexpr int64_t kVocabSize = 2048;
// Answers are a sentence or two, so that a question and its answer fit in
// one training window and the model learns to end its turn.
constexpr size_t kMaxAnswerBytes = 240;

struct AdapterPlan {
  const char* id;
  const char* document;  // also in the base model's text; the adapter narrows the base towards it
  model::DemoLoraSpec spec;
};

const std::vector<AdapterPlan>& Plans() {
  using model::Proj;
  static const auto* plans = new std::vector<AdapterPlan>{
      {"demo-qv-r4", "docs/chat_templates.md", {4, 8, {Proj::kQ, Proj::kV}, 7001}},
      {"demo-all-r8",
       "SECURITY.md",
       {8, 16, {Proj::kQ, Proj::kK, Proj::kV, Proj::kO, Proj::kGate, Proj::kUp, Proj::kDown}, 7002}},
  };
  return *plans;
}

// FNV-1a over the documents' paths and bytes and the schedule.
std::string CacheKey(const model::DemoSchedule& s) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view bytes) {
    for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  };
  for (const DemoDocument& d : DemoDocuments()) {
    mix(d.path);
    mix(d.text);
  }
  mix(absl::StrCat(s.seed, "/", s.bigram_steps, "/", s.base_steps, "/", s.lora_steps));
  return absl::StrFormat("%012x", h & 0xffffffffffffull);
}

// Appends each paragraph of prose of `d` as a sequence of its own: BOS, the
// paragraph, EOS. A prompt (which starts with BOS) then reads as the start
// of a paragraph.
absl::Status AppendParagraphs(const PromptBuilder& prompts, const DemoDocument& d, std::vector<int32_t>* out) {
  for (const std::string& paragraph : ProseParagraphs(d.text)) {
    absl::StatusOr<std::vector<int32_t>> ids = prompts.Tokenize(paragraph, std::nullopt, true);
    if (!ids.ok()) {
      return absl::Status(ids.status().code(), absl::StrCat(std::string(d.path), ": ", ids.status().message()));
    }
    out->insert(out->end(), ids->begin(), ids->end());
    out->push_back(static_cast<int32_t>(kDemoEosId));
  }
  return absl::OkStatus();
}

// The exchanges twice, as conversations of two: once paired (0 1) (2 3) ...,
// once (0) (1 2) (3 4) ..., so that every answer is learnt both at the start
// of a conversation and after an earlier turn.
std::vector<ChatPrompt> Conversations(const std::vector<ChatPrompt>& exchanges) {
  std::vector<ChatPrompt> out;
  for (size_t first : {size_t{2}, size_t{1}}) {
    for (size_t i = 0; i < exchanges.size();) {
      ChatPrompt c;
      for (size_t n = i == 0 ? first : 2; n > 0 && i < exchanges.size(); --n, ++i) {
        for (const ChatMessage& m : exchanges[i].messages) c.messages.push_back(m);
      }
      out.push_back(std::move(c));
    }
  }
  return out;
}

// The base model's stream: every document's paragraphs, then the section
// exchanges in the chat format.
absl::StatusOr<std::vector<int32_t>> BaseStream(const PromptBuilder& prompts) {
  std::vector<int32_t> out;
  std::vector<ChatPrompt> exchanges;
  for (const DemoDocument& d : DemoDocuments()) {
    if (absl::Status st = AppendParagraphs(prompts, d, &out); !st.ok()) return st;
    for (ChatPrompt& c : SectionExchanges(d.text, kMaxAnswerBytes)) exchanges.push_back(std::move(c));
  }
  const size_t document_tokens = out.size();
  for (const ChatPrompt& c : Conversations(exchanges)) {
    absl::StatusOr<std::vector<int32_t>> ids = prompts.Tokenize(std::nullopt, c, false);
    if (!ids.ok()) return ids.status();
    out.insert(out.end(), ids->begin(), ids->end());
  }
  LOG(INFO) << "demo model: " << document_tokens << " tokens of documents and " << out.size() - document_tokens
            << " of conversations from " << exchanges.size() << " section exchanges";
  return out;
}

// The CPU time this process has used so far (all threads, user and system).
absl::Duration ProcessCpuTime() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return absl::DurationFromTimeval(u.ru_utime) + absl::DurationFromTimeval(u.ru_stime);
}

// Trains the adapters of Plans() on `base`, one thread each, into
// `dir`/adapters/<id>.
absl::Status TrainAdapters(const fs::path& dir, const PromptBuilder& prompts, const model::NamedTensors& base,
                           const model::DemoSchedule& schedule) {
  const std::vector<AdapterPlan>& plans = Plans();
  std::vector<absl::Status> results(plans.size());
  auto train_one = [&](size_t i) {
    const AdapterPlan& p = plans[i];
    const DemoDocument* d = FindDemoDocument(p.document);
    if (d == nullptr) {
      results[i] = absl::InternalError(absl::StrCat(p.document, " is not embedded"));
      return;
    }
    std::vector<int32_t> ids;
    if (results[i] = AppendParagraphs(prompts, *d, &ids); !results[i].ok()) return;
    model::TrainReport r;
    absl::StatusOr<model::NamedTensors> lora = model::TrainDemoLora(base, ids, p.spec, schedule, &r);
    if (!lora.ok()) {
      results[i] = lora.status();
      return;
    }
    const fs::path adir = dir / "adapters" / p.id;
    std::error_code ec;
    fs::create_directories(adir, ec);
    results[i] = ec ? absl::InternalError(absl::StrCat(adir.string(), ": ", ec.message()))
                    : adapters::WritePeftLora(adir.string(), p.spec.r, p.spec.alpha, p.spec.targets, *lora);
    LOG(INFO) << "demo adapter " << p.id << " trained on " << p.document << ": loss " << r.first_loss << " -> "
              << r.final_loss << " in " << absl::FormatDuration(r.time);
  };
  std::vector<std::thread> threads;
  for (size_t i = 1; i < plans.size(); ++i) threads.emplace_back(train_one, i);
  train_one(0);
  for (std::thread& t : threads) t.join();
  for (const absl::Status& st : results) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

// Trains everything into `dir` (which exists and is empty).
absl::Status Train(const fs::path& dir, const model::DemoSchedule& schedule) {
  const absl::Time start = absl::Now();
  const absl::Duration cpu_start = ProcessCpuTime();
  ScopedComputeThreads one_thread(1);
  // LibTorch frees and allocates the same large buffers at every training
  // step; given back to the kernel, they cost a sixth of the training time
  // in page faults.
  HeapRetention heap;
  const fs::path model_dir = dir / kTrainedDemoName;
  std::error_code ec;
  fs::create_directories(model_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(model_dir.string(), ": ", ec.message()));
  absl::StatusOr<DemoTokenizerFiles> tok = TrainDemoTokenizer(DemoDocuments(), kVocabSize);
  if (!tok.ok()) return tok.status();
  if (absl::Status st = WriteDemoTokenizer(model_dir.string(), *tok); !st.ok()) return st;
  absl::StatusOr<std::unique_ptr<PromptBuilder>> prompts = PromptBuilder::Load(model_dir.string());
  if (!prompts.ok()) return prompts.status();
  LOG(INFO) << "demo tokenizer trained in " << absl::FormatDuration(absl::Now() - start);

  absl::StatusOr<std::vector<int32_t>> stream = BaseStream(**prompts);
  if (!stream.ok()) return stream.status();
  model::TrainReport report;
  absl::StatusOr<model::NamedTensors> base = model::TrainDemoModel(*stream, schedule, &report);
  if (!base.ok()) return base.status();
  LOG(INFO) << "demo model trained: loss " << report.first_loss << " -> " << report.final_loss << " in "
            << absl::FormatDuration(report.time);
  if (absl::Status st = model::WriteDemoCheckpoint(model_dir.string(), *base, {kDemoEosId, kDemoEndTurnId});
      !st.ok()) {
    return st;
  }
  if (absl::Status st = TrainAdapters(dir, **prompts, *base, schedule); !st.ok()) return st;
  LOG(INFO) << "the demo was trained in " << absl::FormatDuration(absl::Now() - start) << " ("
            << absl::FormatDuration(ProcessCpuTime() - cpu_start) << " of CPU time)";
  return absl::OkStatus();
}

TrainedDemo Result(const fs::path& dir) {
  TrainedDemo out{(dir / kTrainedDemoName).string(), {}};
  for (const AdapterPlan& p : Plans()) out.adapters.emplace_back(p.id, (dir / "adapters" / p.id).string());
  return out;
}

// An exclusive flock on a file, held for the object's lifetime; it
// serializes processes, and threads of one process, that each hold their
// own. The object owns the descriptor. Not thread-safe itself.
class FileLock {
 public:
  static absl::StatusOr<std::unique_ptr<FileLock>> Acquire(const fs::path& path) {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return absl::InternalError(absl::StrCat(path.string(), ": cannot open: ", strerror(errno)));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      LOG(INFO) << "waiting for another process that is training the demo (" << path.string() << ")";
      while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
          const int error = errno;
          close(fd);
          return absl::InternalError(absl::StrCat(path.string(), ": cannot lock: ", strerror(error)));
        }
      }
    }
    return std::unique_ptr<FileLock>(new FileLock(fd));
  }
  ~FileLock() { close(fd_); }  // releases the lock
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

bool Complete(const fs::path& dir) { return fs::exists(dir / kTrainedDemoName / "model.safetensors"); }

}  // namespace

absl::StatusOr<TrainedDemo> EnsureTrainedDemo(const std::string& cache_dir, const model::DemoSchedule& schedule) {
  const std::string name = absl::StrCat(kTrainerVersion, "-", CacheKey(schedule));
  const fs::path dir = fs::path(cache_dir) / name;
  if (Complete(dir)) return Result(dir);
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(cache_dir, ": ", ec.message()));
  absl::StatusOr<std::unique_ptr<FileLock>> lock = FileLock::Acquire(fs::path(cache_dir) / ("." + name + ".lock"));
  if (!lock.ok()) return lock.status();
  if (Complete(dir)) return Result(dir);  // trained while we waited

  // Only the lock holder writes temporary directories: any left are stale.
  const std::string tmp_prefix = "." + name + ".tmp.";
  for (auto it = fs::directory_iterator(cache_dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    if (absl::StartsWith(it->path().filename().string(), tmp_prefix)) fs::remove_all(it->path(), ec);
  }
  const fs::path tmp = fs::path(cache_dir) / absl::StrCat(tmp_prefix, getpid());
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat(tmp.string(), ": ", ec.message()));
  LOG(INFO) << "training the demo model on the project's documentation into " << dir.string()
            << " (once; about half a minute on two idle cores)";
  if (absl::Status st = Train(tmp, schedule); !st.ok()) {
    fs::remove_all(tmp, ec);
    return absl::Status(st.code(), absl::StrCat("training the demo model: ", st.message()));
  }
  fs::rename(tmp, dir, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    return absl::InternalError(absl::StrCat(dir.string(), ": ", ec.message()));
  }
  return Result(dir);
}

}  // namespace adapterd::core
