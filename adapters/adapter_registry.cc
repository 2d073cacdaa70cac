#include "adapters/adapter_registry.h"

#include <optional>
#include <utility>

#include "absl/log/log.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_loader.h"

namespace adapterd::adapters {

std::string_view AdapterStateName(AdapterState s) {
  switch (s) {
    case AdapterState::kLoading: return "loading";
    case AdapterState::kReady: return "ready";
    case AdapterState::kUnloading: return "unloading";
    case AdapterState::kGone: return "gone";
    case AdapterState::kFailed: return "failed";
  }
  return "unknown";
}

Adapter::Adapter(AdapterInfo info, std::shared_ptr<CacheSlot> slot, AdapterCache* cache)
    : info_(std::move(info)), slot_(std::move(slot)), cache_(cache) {}

void Adapter::RecordRequest(int64_t tokens) const {
  requests_.fetch_add(1, std::memory_order_relaxed);
  tokens_.fetch_add(tokens, std::memory_order_relaxed);
}

AdapterInfo Adapter::info() const {
  AdapterInfo i = info_;
  i.requests_served = requests_.load(std::memory_order_relaxed);
  i.tokens_generated = tokens_.load(std::memory_order_relaxed);
  i.tier = cache_->TierOf(*slot_);
  i.pinned = cache_->Pinned(*slot_);
  return i;
}

AdapterRegistry::AdapterRegistry(const model::LlamaModel* base, AdapterStore* store,
                                 AdapterCacheOptions cache, metrics::AdapterMetrics* metrics)
    : base_(base), store_(store), metrics_(metrics), cache_(base, cache, metrics) {
  loader_ = std::thread([this] { LoaderLoop(); });
}

AdapterRegistry::~AdapterRegistry() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  loader_.join();
}

absl::Status AdapterRegistry::ValidateId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 128 && absl::ascii_isalnum(static_cast<unsigned char>(id[0]));
  for (char c : id) {
    ok = ok && (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      "adapter_id must be 1-128 characters of [A-Za-z0-9._-] starting with a letter or digit");
}

absl::Status AdapterRegistry::StartLoad(std::string id, AdapterSource source, bool replace,
                                        LoadDone done, bool persist, bool pin, std::string store_stamp) {
  if (absl::Status s = ValidateId(id); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("server is shutting down");
  auto it = entries_.find(id);
  if (it != entries_.end()) {
    if (it->second.state == AdapterState::kLoading || it->second.replacing) {
      return absl::FailedPreconditionError(absl::StrCat("adapter '", id, "' is already loading"));
    }
    if (it->second.state == AdapterState::kUnloading) {
      return absl::FailedPreconditionError(absl::StrCat("adapter '", id, "' is being unloaded; retry"));
    }
    if (!replace) {
      return absl::AlreadyExistsError(absl::StrCat(
          "adapter '", id, "' is already loaded; set replace to swap it for the new version"));
    }
    it->second.replacing = true;
  } else {
    Entry e;
    e.source = std::holds_alternative<PathSource>(source) ? std::get<PathSource>(source).dir : "upload";
    entries_.emplace(id, std::move(e));
  }
  tasks_.push_back(Task{std::move(id), std::move(source), std::move(done), persist, pin, replace,
                        std::move(store_stamp)});
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Adapter>> AdapterRegistry::Build(const Task& task) {
  const absl::Time start = absl::Now();
  const auto* path = std::get_if<PathSource>(&task.source);
  absl::StatusOr<AdapterFiles> files = path != nullptr
                                           ? ReadAdapterDirectory(path->dir)
                                           : AdapterFilesFromUpload(std::get<UploadSource>(task.source).files);
  if (!files.ok()) return files.status();
  absl::StatusOr<LoadedAdapter> loaded = LoadAdapter(*files, *base_);
  if (!loaded.ok()) return loaded.status();
  AdapterInfo info;
  info.id = task.id;
  info.state = AdapterState::kReady;
  info.summary = std::move(loaded->summary);
  info.source = files->label;
  info.bytes = loaded->weights->bytes();
  info.loaded_at = absl::Now();
  info.load_duration = info.loaded_at - start;
  info.store_stamp = task.store_stamp;
  // Where the cache can read it back: the directory of a path load (held,
  // in case it is a store version directory that a replace supersedes). An
  // upload has only its host copy until the store has written its version.
  std::optional<DiskCopy> disk;
  std::shared_ptr<const UploadSource> host;
  if (path != nullptr) {
    disk = DiskCopy{path->dir, store_ != nullptr ? store_->Hold(path->dir) : nullptr, task.store_stamp};
  } else {
    host = std::make_shared<const UploadSource>(std::get<UploadSource>(task.source));
  }
  absl::StatusOr<std::shared_ptr<CacheSlot>> slot =
      cache_.Insert(task.id, std::move(loaded->weights), std::move(host), std::move(disk), task.pin);
  if (!slot.ok()) return slot.status();
  // Durable before acknowledged: a load the store cannot record fails.
  if (task.persist && store_ != nullptr) {
    absl::StatusOr<DiskCopy> stored = store_->Put(task.id, task.source, task.pin, task.replace);
    if (!stored.ok()) return stored.status();
    info.store_stamp = stored->stamp;
    if (path == nullptr) cache_.AttachDisk(**slot, *std::move(stored));
  }
  return std::make_shared<const Adapter>(std::move(info), *std::move(slot), &cache_);
}

void AdapterRegistry::LoaderLoop() {
  while (true) {
    Task task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !tasks_.empty() || stopping_; };
      mu_.Await(absl::Condition(&ready));
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    absl::StatusOr<std::shared_ptr<const Adapter>> built = Build(task);
    absl::StatusOr<AdapterInfo> result;
    std::shared_ptr<const Adapter> replaced;  // released outside the lock
    {
      absl::MutexLock lock(&mu_);
      auto it = entries_.find(task.id);
      if (!built.ok()) {
        if (it != entries_.end()) {
          if (it->second.replacing) {
            it->second.replacing = false;  // the old version keeps serving
          } else {
            entries_.erase(it);
          }
        }
        result = built.status();
      } else if (it == entries_.end()) {
        result = absl::AbortedError(absl::StrCat("adapter '", task.id, "' was unloaded while loading"));
      } else {
        replaced = std::move(it->second.adapter);
        it->second.adapter = *built;
        it->second.state = AdapterState::kReady;
        it->second.replacing = false;
        it->second.source = (*built)->info().source;
        result = (*built)->info();
      }
    }
    // Drop the loader's references before reporting, so that a replaced
    // version's memory is already gone when the caller hears back.
    replaced.reset();
    built = absl::CancelledError("released");
    if (result.ok()) {
      LOG(INFO) << "adapter " << task.id << " ready: " << result->summary.type << ", " << result->bytes
                << " bytes, loaded in " << absl::FormatDuration(result->load_duration);
    } else {
      LOG(WARNING) << "adapter " << task.id << " failed to load: " << result.status();
    }
    if (task.done) task.done(std::move(result));
  }
}

absl::Status AdapterRegistry::Unload(const std::string& id, bool keep_on_disk, bool delete_from_store) {
  std::shared_ptr<const Adapter> released;
  bool only_in_store = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(id);
    if (it == entries_.end() && !keep_on_disk && delete_from_store && store_ != nullptr && store_->shared() &&
        ValidateId(id).ok()) {
      // Held by other servers only: the id stays taken while its entry goes.
      Entry e;
      e.state = AdapterState::kUnloading;
      it = entries_.emplace(id, std::move(e)).first;
      only_in_store = true;
    } else if (it == entries_.end() || it->second.state == AdapterState::kUnloading) {
      return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not loaded"));
    }
    if (it->second.state == AdapterState::kLoading || it->second.replacing) {
      return absl::FailedPreconditionError(absl::StrCat("adapter '", id, "' is still loading"));
    }
    if (keep_on_disk) {
      if (absl::Status st = cache_.Offload(it->second.adapter->slot()); !st.ok()) return st;
      LOG(INFO) << "adapter " << id << " offloaded to disk";
      return absl::OkStatus();
    }
    // unloading: new requests get NOT_FOUND at once, and the id stays taken
    // until the store entry is gone, so no load of the same id can record
    // itself in the store before this unload deletes the entry. The adapter
    // is gone when the last running request drops its reference.
    if (!only_in_store) {
      it->second.state = AdapterState::kUnloading;
      released = std::move(it->second.adapter);
    }
  }
  if (only_in_store) {
    const bool stored = store_->Has(id);
    absl::Status removed = stored ? store_->Remove(id) : absl::NotFoundError(absl::StrCat("adapter '", id, "' is not loaded"));
    absl::MutexLock lock(&mu_);
    entries_.erase(id);
    return removed;
  }
  LOG(INFO) << "adapter " << id << " unloaded (" << released.use_count() - 1 << " other references remain)";
  released.reset();
  absl::Status removed = store_ != nullptr && delete_from_store ? store_->Remove(id) : absl::OkStatus();
  {
    absl::MutexLock lock(&mu_);
    entries_.erase(id);
  }
  if (!removed.ok()) {
    return absl::InternalError(absl::StrCat("adapter '", id, "' is unloaded, but its store entry could not be deleted and it will be loaded again at the next start: ", removed.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Adapter>> AdapterRegistry::Lookup(const std::string& id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.state == AdapterState::kUnloading) {
    return absl::NotFoundError(absl::StrCat("adapter_id '", id, "' is not loaded"));
  }
  if (it->second.adapter == nullptr) {
    return absl::UnavailableError(absl::StrCat("adapter_id '", id, "' is still loading; retry"));
  }
  return it->second.adapter;
}

absl::StatusOr<std::shared_ptr<const Adapter>> AdapterRegistry::LookupOrLoad(const std::string& id,
                                                                             absl::Time deadline) {
  absl::StatusOr<std::shared_ptr<const Adapter>> found = Lookup(id);
  if (found.ok() || store_ == nullptr || !store_->shared()) return found;
  if (!absl::IsNotFound(found.status()) && !absl::IsUnavailable(found.status())) return found;
  struct Result {
    absl::Notification done;
    absl::Status status;
  };
  std::shared_ptr<Result> mine;
  if (absl::IsNotFound(found.status())) {
    if (!ValidateId(id).ok()) return found;
    absl::StatusOr<StoredAdapter> stored = store_->Find(id);
    if (!stored.ok()) {
      if (absl::IsNotFound(stored.status())) return found;
      return absl::NotFoundError(absl::StrCat("adapter_id '", id, "' is in the adapter store but damaged: ",
                                              stored.status().message()));
    }
    mine = std::make_shared<Result>();
    absl::Status st = StartLoad(
        id, std::move(stored->source), /*replace=*/false,
        [mine](absl::StatusOr<AdapterInfo> r) {
          mine->status = r.status();
          mine->done.Notify();
        },
        /*persist=*/false, stored->pinned, stored->stamp);
    if (!st.ok()) mine.reset();  // loaded or loading meanwhile: wait for that below
  }
  if (metrics_ != nullptr) metrics_->RecordStoreMiss();
  if (mine != nullptr) {
    if (!mine->done.WaitForNotificationWithDeadline(deadline)) {
      return absl::DeadlineExceededError(absl::StrCat("adapter_id '", id, "' is still loading from the adapter store"));
    }
    if (metrics_ != nullptr) metrics_->RecordStoreLoad(mine->status.ok() ? "loaded" : "failed");
    if (!mine->status.ok() && !absl::IsAlreadyExists(mine->status)) {
      return absl::NotFoundError(absl::StrCat("adapter_id '", id, "' could not be loaded from the adapter store: ",
                                              mine->status.message()));
    }
  } else {
    auto settled = [this, &id]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      auto it = entries_.find(id);
      return it == entries_.end() || it->second.adapter != nullptr || it->second.state == AdapterState::kUnloading;
    };
    const bool in_time = mu_.ReaderLockWhenWithDeadline(absl::Condition(&settled), deadline);
    mu_.ReaderUnlock();
    if (!in_time) {
      return absl::DeadlineExceededError(absl::StrCat("adapter_id '", id, "' is still loading from the adapter store"));
    }
  }
  return Lookup(id);
}

absl::StatusOr<AdapterInfo> AdapterRegistry::Get(const std::string& id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.state == AdapterState::kUnloading) {
    return absl::NotFoundError(absl::StrCat("adapter '", id, "' is not loaded"));
  }
  if (it->second.adapter != nullptr) return it->second.adapter->info();
  AdapterInfo info;
  info.id = id;
  info.state = AdapterState::kLoading;
  info.source = it->second.source;
  return info;
}

std::vector<AdapterInfo> AdapterRegistry::List() const {
  std::vector<AdapterInfo> out;
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [id, e] : entries_) {
    if (e.state == AdapterState::kUnloading) continue;
    if (e.adapter != nullptr) {
      out.push_back(e.adapter->info());
    } else {
      AdapterInfo info;
      info.id = id;
      info.state = AdapterState::kLoading;
      info.source = e.source;
      out.push_back(std::move(info));
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

int64_t AdapterRegistry::ready_count() const {
  absl::ReaderMutexLock lock(&mu_);
  int64_t n = 0;
  for (const auto& [id, e] : entries_) n += e.adapter != nullptr;
  return n;
}

}  // namespace adapterd::adapters
