#include "server/core/trained_demo.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>
#include <system_error>
#include <thread>

#include "absl/log/log.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "adapters/demo_adapters.h"
#include "server/common/compute_threads.h"
#include "server/core/demo_corpus.h"
#include "server/core/demo_tokenizer.h"
#include "server/core/prompt_builder.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/demo_trainer.h"

namespace adapterd::core {
namespace {

namespace fs = std::filesystem;

// Bump when the trainer, its schedule or the file layout changes.
constexpr char kTrainerVersion[] = "demo-trained-v1";
constexpr int64_t kVocabSize = 2048;
constexpr size_t kMaxAnswerBytes = 600;

struct AdapterPlan {
  const char* id;
  const char* document;
  // Whether the base model also learns the document (the adapter then
  // narrows the base towards it) or not (the adapter brings it in).
  bool in_base;
  model::DemoLoraSpec spec;
};

const std::vector<AdapterPlan>& Plans() {
  using model::Proj;
  static const auto* plans = new std::vector<AdapterPlan>{
      {"demo-qv-r4", "docs/benchmarks.md", false, {4, 8, {Proj::kQ, Proj::kV}, 7001}},
      {"demo-all-r8",
       "SECURITY.md",
       true,
       {8, 16, {Proj::kQ, Proj::kK, Proj::kV, Proj::kO, Proj::kGate, Proj::kUp, Proj::kDown}, 7002}},
  };
  return *plans;
}

// Whether only an adapter learns the document at `path`.
bool AdapterOnly(std::string_view path) {
  for (const AdapterPlan& p : Plans()) {
    if (path == p.document && !p.in_base) return true;
  }
  return false;
}

// FNV-1a over the documents' paths and bytes.
std::string DocumentsHash() {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  };
  for (const DemoDocument& d : DemoDocuments()) {
    mix(d.path);
    mix(d.text);
  }
  return absl::StrFormat("%012x", h & 0xffffffffffffull);
}

// Whether a markdown line starts a paragraph of prose (not a table, a
// list, a quote, a heading or markup).
bool StartsProse(absl::string_view line) {
  return !line.empty() && (absl::ascii_isalnum(line[0]) || line[0] == '`' || line[0] == '*');
}

// One exchange per heading of a markdown document: the heading (without
// markup) asks, and the first paragraph of prose in its section (outside
// code blocks) answers, cut after the last sentence that fits.
std::vector<ChatPrompt> SectionExchanges(std::string_view text) {
  std::vector<ChatPrompt> out;
  std::vector<absl::string_view> lines = absl::StrSplit(absl::string_view(text.data(), text.size()), '\n');
  std::string title, answer;
  bool in_code = false, answered = true;
  auto finish = [&] {
    if (answer.size() > kMaxAnswerBytes) {
      const size_t end = answer.rfind(". ", kMaxAnswerBytes);
      answer.resize(end == std::string::npos ? 0 : end + 1);
    }
    if (!title.empty() && !answer.empty()) out.push_back(ChatPrompt{{{"user", title}, {"assistant", answer}}, false});
    answer.clear();
  };
  for (absl::string_view line : lines) {
    if (absl::StartsWith(line, "```")) in_code = !in_code;
    if (in_code) continue;
    if (absl::StartsWith(line, "#")) {
      finish();
      title = std::string(absl::StripAsciiWhitespace(absl::StripLeadingAsciiWhitespace(line.substr(line.find(' ') + 1))));
      title.erase(std::remove(title.begin(), title.end(), '`'), title.end());
      answered = false;
      continue;
    }
    const absl::string_view trimmed = absl::StripAsciiWhitespace(line);
    if (!answered && answer.empty() && StartsProse(trimmed)) {
      answer = std::string(trimmed);
    } else if (!answered && !answer.empty()) {
      if (trimmed.empty()) {
        answered = true;
      } else {
        absl::StrAppend(&answer, " ", trimmed);
      }
    }
  }
  finish();
  return out;
}

// Appends the ids of `text` (with BOS) and EOS.
absl::Status AppendDocument(const PromptBuilder& prompts, const DemoDocument& d, std::vector<int32_t>* out) {
  absl::StatusOr<std::vector<int32_t>> ids = prompts.Tokenize(std::string(d.text), std::nullopt, true);
  if (!ids.ok()) return absl::Status(ids.status().code(), absl::StrCat(std::string(d.path), ": ", ids.status().message()));
  out->insert(out->end(), ids->begin(), ids->end());
  out->push_back(static_cast<int32_t>(kDemoEosId));
  return absl::OkStatus();
}

// The base model's stream: the documents the adapters do not take, then
// their section exchanges in the chat format.
absl::StatusOr<std::vector<int32_t>> BaseStream(const PromptBuilder& prompts) {
  std::vector<int32_t> out;
  std::vector<ChatPrompt> chats;
  for (const DemoDocument& d : DemoDocuments()) {
    if (AdapterOnly(d.path)) continue;
    if (absl::Status st = AppendDocument(prompts, d, &out); !st.ok()) return st;
    for (ChatPrompt& c : SectionExchanges(d.text)) chats.push_back(std::move(c));
  }
  const size_t document_tokens = out.size();
  for (const ChatPrompt& c : chats) {
    absl::StatusOr<std::vector<int32_t>> ids = prompts.Tokenize(std::nullopt, c, false);
    if (!ids.ok()) return ids.status();
    out.insert(out.end(), ids->begin(), ids->end());
  }
  LOG(INFO) << "demo model: " << document_tokens << " tokens of documents and " << out.size() - document_tokens
            << " of " << chats.size() << " chat exchanges";
  return out;
}

// LibTorch frees and allocates the same large buffers at every step, which
// glibc would hand back to the kernel and fault in again (a sixth of the
// training time went to the kernel). While an object lives, freed memory
// stays in the heap; its destructor returns what is free.
class HeapRetention {
 public:
  HeapRetention() {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }
  ~HeapRetention() {
    mallopt(M_TRIM_THRESHOLD, 128 << 10);
    malloc_trim(0);
  }
};

// Trains everything into `dir` (which exists and is empty).
absl::Status Train(const fs::path& dir) {
  const absl::Time start = absl::Now();
  ScopedComputeThreads one_thread(1);
  HeapRetention heap;
  const fs::path model_dir = dir / "model";
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
  absl::StatusOr<model::NamedTensors> base = model::TrainDemoModel(*stream, &report);
  if (!base.ok()) return base.status();
  LOG(INFO) << "demo model trained: loss " << report.first_loss << " -> " << report.final_loss << " in "
            << absl::FormatDuration(report.time);
  if (absl::Status st = model::WriteDemoCheckpoint(model_dir.string(), *base, {kDemoEosId, kDemoEndTurnId});
      !st.ok()) {
    return st;
  }

  // The adapters train side by side, one worker each.
  const std::vector<AdapterPlan>& plans = Plans();
  std::vector<absl::Status> results(plans.size());
  auto train_one = [&](size_t i) {
    const AdapterPlan& p = plans[i];
    std::vector<int32_t> ids;
    const DemoDocument* d = FindDemoDocument(p.document);
    if (d == nullptr) {
      results[i] = absl::InternalError(absl::StrCat(p.document, " is not embedded"));
      return;
    }
    if (results[i] = AppendDocument(**prompts, *d, &ids); !results[i].ok()) return;
    model::TrainReport r;
    absl::StatusOr<model::NamedTensors> lora = model::TrainDemoLora(*base, ids, p.spec, &r);
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
  LOG(INFO) << "the demo was trained in " << absl::FormatDuration(absl::Now() - start);
  return absl::OkStatus();
}

TrainedDemo Result(const fs::path& dir) {
  TrainedDemo out{(dir / "model").string(), {}};
  for (const AdapterPlan& p : Plans()) out.adapters.emplace_back(p.id, (dir / "adapters" / p.id).string());
  return out;
}

// An exclusive flock on `path` for the object's lifetime.
class FileLock {
 public:
  static absl::StatusOr<std::unique_ptr<FileLock>> Acquire(const fs::path& path) {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return absl::InternalError(absl::StrCat(path.string(), ": cannot open: ", strerror(errno)));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      LOG(INFO) << "waiting for another process that is training the demo (" << path.string() << ")";
      while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
          close(fd);
          return absl::InternalError(absl::StrCat(path.string(), ": cannot lock: ", strerror(errno)));
        }
      }
    }
    return std::unique_ptr<FileLock>(new FileLock(fd));
  }
  ~FileLock() { close(fd_); }  // releases the lock

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace

absl::StatusOr<TrainedDemo> EnsureTrainedDemo(const std::string& cache_dir) {
  const std::string name = absl::StrCat(kTrainerVersion, "-", DocumentsHash());
  const fs::path dir = fs::path(cache_dir) / name;
  if (fs::exists(dir / "model" / "model.safetensors")) return Result(dir);
  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(cache_dir, ": ", ec.message()));
  absl::StatusOr<std::unique_ptr<FileLock>> lock = FileLock::Acquire(fs::path(cache_dir) / ("." + name + ".lock"));
  if (!lock.ok()) return lock.status();
  if (fs::exists(dir / "model" / "model.safetensors")) return Result(dir);  // trained while we waited

  // Only the lock holder writes temporary directories: any left are stale.
  const std::string tmp_prefix = "." + name + ".tmp.";
  for (auto it = fs::directory_iterator(cache_dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    if (absl::StartsWith(it->path().filename().string(), tmp_prefix)) fs::remove_all(it->path(), ec);
  }
  const fs::path tmp = fs::path(cache_dir) / absl::StrCat(tmp_prefix, getpid());
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat(tmp.string(), ": ", ec.message()));
  LOG(INFO) << "training the demo model on the project's documentation into " << dir.string()
            << " (once; about a minute)";
  if (absl::Status st = Train(tmp); !st.ok()) {
    fs::remove_all(tmp, ec);
    return absl::Status(st.code(), absl::StrCat("training the demo model: ", st.message()));
  }
  fs::rename(tmp, dir, ec);
  if (ec) {
    fs::remove_all(tmp);
    return absl::InternalError(absl::StrCat(dir.string(), ": ", ec.message()));
  }
  return Result(dir);
}

}  // namespace adapterd::core
