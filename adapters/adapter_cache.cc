#include "adapters/adapter_cache.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_loader.h"

namespace adapterd::adapters {

std::string_view TierName(Tier t) {
  switch (t) {
    case Tier::kDevice: return "device";
    case Tier::kHost: return "host";
    case Tier::kDisk: return "disk";
  }
  return "disk";
}

namespace {

int64_t FileBytes(const UploadSource& files) {
  int64_t n = 0;
  for (const auto& [name, data] : files.files) n += static_cast<int64_t>(data.size());
  return n;
}

// What ReadAdapterFilesIntoMemory would hold for `dir`.
int64_t DirFileBytes(const std::string& dir) {
  int64_t n = 0;
  std::error_code ec;
  for (const char* name : {kConfigFile, kWeightsFile, kAdapterHubWeightsFile}) {
    const auto size = std::filesystem::file_size(std::filesystem::path(dir) / name, ec);
    if (!ec) n += static_cast<int64_t>(size);
  }
  return n;
}

bool Fits(int64_t used, int64_t bytes, int64_t budget) { return budget <= 0 || used + bytes <= budget; }

}  // namespace

// A request's claim on one slot. weights() is called from the engine thread.
class AdapterCache::LeaseImpl final : public engine::AdapterLease {
 public:
  LeaseImpl(std::shared_ptr<CacheSlot> slot, bool waiting) : slot_(std::move(slot)), waiting_(waiting) {}
  ~LeaseImpl() override { slot_->cache_->ReleaseLease(*slot_, waiting_); }

  int64_t num_virtual_tokens() const override { return slot_->num_virtual_tokens_; }
  absl::StatusOr<const model::AdapterWeights*> weights() override {
    if (weights_ != nullptr) return weights_;
    absl::StatusOr<const model::AdapterWeights*> w = slot_->cache_->Resolve(*slot_, waiting_);
    if (w.ok()) weights_ = *w;
    return w;
  }

 private:
  const std::shared_ptr<CacheSlot> slot_;
  bool waiting_;  // counted in waiting_leases (engine thread, or the destructor)
  const model::AdapterWeights* weights_ = nullptr;
};

CacheSlot::~CacheSlot() { cache_->Forget(this); }

AdapterCache::AdapterCache(const model::LlamaModel* base, AdapterCacheOptions options,
                           metrics::ServerMetrics* metrics)
    : base_(base), options_(options), metrics_(metrics) {
  {
    absl::MutexLock lock(&mu_);
    PublishTiersLocked();
  }
  loader_ = std::thread([this] { LoaderLoop(); });
}

AdapterCache::~AdapterCache() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  loader_.join();
}

Tier AdapterCache::TierLocked(const CacheSlot& slot) const {
  if (slot.device_ != nullptr) return Tier::kDevice;
  if (slot.host_ != nullptr) return Tier::kHost;
  return Tier::kDisk;
}

Tier AdapterCache::TierOf(const CacheSlot& slot) const {
  absl::MutexLock lock(&mu_);
  return TierLocked(slot);
}

bool AdapterCache::Pinned(const CacheSlot& slot) const {
  absl::MutexLock lock(&mu_);
  return slot.pinned_;
}

void AdapterCache::PublishLocked(CacheSlot& slot) {
  const Tier t = TierLocked(slot);
  if (metrics_ != nullptr && (!slot.reported_ || t != slot.reported_tier_)) {
    metrics_->MoveAdapterResidency(slot.id_, slot.reported_ ? TierName(slot.reported_tier_) : "",
                                   TierName(t));
  }
  slot.reported_ = true;
  slot.reported_tier_ = t;
  PublishTiersLocked();
}

AdapterCache::Stats AdapterCache::StatsLocked() const {
  Stats s = counters_;
  for (const CacheSlot* c : slots_) {
    if (c->device_ != nullptr) ++s.device_adapters;
    if (c->host_ != nullptr) ++s.host_adapters;
    if (c->disk_dir_.has_value()) {
      ++s.disk_adapters;
      s.disk_bytes += c->host_bytes_;
    }
  }
  s.device_bytes = device_used_ + device_reserved_;
  s.host_bytes = host_used_;
  return s;
}

void AdapterCache::PublishTiersLocked() {
  if (metrics_ == nullptr) return;
  const Stats s = StatsLocked();
  metrics_->SetTierUsage("device", s.device_adapters, s.device_bytes, options_.device_bytes);
  metrics_->SetTierUsage("host", s.host_adapters, s.host_bytes, options_.host_bytes);
  metrics_->SetTierUsage("disk", s.disk_adapters, s.disk_bytes, 0);
  metrics_->requests_waiting_on_load().Set(static_cast<double>(s.waiting_leases));
}

void AdapterCache::DropDeviceLocked(CacheSlot& slot, std::vector<std::shared_ptr<const void>>& released) {
  if (slot.device_ == nullptr) return;
  released.push_back(std::move(slot.device_));
  slot.device_.reset();
  device_used_ -= slot.device_bytes_;
  ++changes_;
}

void AdapterCache::DropHostLocked(CacheSlot& slot, std::vector<std::shared_ptr<const void>>& released) {
  if (slot.host_ == nullptr) return;
  released.push_back(std::move(slot.host_));
  slot.host_.reset();
  host_used_ -= slot.host_bytes_;
}

bool AdapterCache::MakeDeviceRoomLocked(int64_t bytes, const CacheSlot* except,
                                        std::vector<std::shared_ptr<const void>>& released) {
  const int64_t budget = options_.device_bytes;
  if (Fits(device_used_ + device_reserved_, bytes, budget)) return true;
  std::vector<CacheSlot*> idle;
  int64_t freeable = 0;
  for (CacheSlot* c : slots_) {
    if (c != except && c->device_ != nullptr && c->leases_ == 0 && !c->pinned_) {
      idle.push_back(c);
      freeable += c->device_bytes_;
    }
  }
  if (!Fits(device_used_ + device_reserved_ - freeable, bytes, budget)) return false;
  std::sort(idle.begin(), idle.end(), [](const CacheSlot* a, const CacheSlot* b) { return a->last_use_ < b->last_use_; });
  for (CacheSlot* c : idle) {
    if (Fits(device_used_ + device_reserved_, bytes, budget)) break;
    DropDeviceLocked(*c, released);
    ++counters_.evictions_device;
    if (metrics_ != nullptr) metrics_->RecordAdapterEviction("device");
    PublishLocked(*c);
  }
  return true;
}

bool AdapterCache::MakeHostRoomLocked(int64_t bytes, const CacheSlot* except,
                                      std::vector<std::shared_ptr<const void>>& released) {
  const int64_t budget = options_.host_bytes;
  if (Fits(host_used_, bytes, budget)) return true;
  // Only copies that can be read back from disk may go.
  std::vector<CacheSlot*> idle;
  int64_t freeable = 0;
  for (CacheSlot* c : slots_) {
    if (c != except && c->host_ != nullptr && c->disk_dir_.has_value() && !c->loading_) {
      idle.push_back(c);
      freeable += c->host_bytes_;
    }
  }
  if (!Fits(host_used_ - freeable, bytes, budget)) return false;
  std::sort(idle.begin(), idle.end(), [](const CacheSlot* a, const CacheSlot* b) { return a->last_use_ < b->last_use_; });
  for (CacheSlot* c : idle) {
    if (Fits(host_used_, bytes, budget)) break;
    DropHostLocked(*c, released);
    ++counters_.evictions_host;
    if (metrics_ != nullptr) metrics_->RecordAdapterEviction("host");
    PublishLocked(*c);
  }
  return true;
}

absl::StatusOr<std::shared_ptr<CacheSlot>> AdapterCache::Insert(
    std::string id, std::shared_ptr<const model::AdapterWeights> weights,
    std::shared_ptr<const UploadSource> files, std::optional<std::string> disk_dir, bool pinned) {
  const int64_t device_bytes = weights->bytes();
  const int64_t host_bytes = files != nullptr ? FileBytes(*files) : disk_dir.has_value() ? DirFileBytes(*disk_dir) : 0;
  if (options_.device_bytes > 0 && device_bytes > options_.device_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "adapter '", id, "' needs ", device_bytes, " bytes on the device tier, more than its whole budget (--adapter_device_bytes=",
        options_.device_bytes, ")"));
  }
  if (!disk_dir.has_value() && files == nullptr) {
    return absl::InternalError(absl::StrCat("adapter '", id, "' has neither files nor a directory"));
  }
  const int64_t virtual_tokens = weights->num_virtual_tokens();
  auto slot = std::shared_ptr<CacheSlot>(
      new CacheSlot(this, id, device_bytes, host_bytes, std::move(disk_dir), virtual_tokens));
  std::vector<std::shared_ptr<const void>> released;  // freed after the lock
  absl::MutexLock lock(&mu_);
  if (!slot->disk_dir_.has_value() && !MakeHostRoomLocked(host_bytes, nullptr, released)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "adapter '", id, "': the host tier (--adapter_host_bytes=", options_.host_bytes,
        ") is full of adapters that have no copy on disk; set --adapter_store so that adapters can be "
        "evicted to disk, or raise the budget"));
  }
  const bool device_room = MakeDeviceRoomLocked(device_bytes, nullptr, released);
  if (pinned && !device_room) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "adapter '", id, "' cannot be pinned: the device tier (--adapter_device_bytes=", options_.device_bytes,
        ") is held by pinned or running adapters"));
  }
  if (files != nullptr && (!slot->disk_dir_.has_value() || MakeHostRoomLocked(host_bytes, nullptr, released))) {
    slot->host_ = std::move(files);
    host_used_ += host_bytes;
  }
  if (device_room) {
    slot->device_ = std::move(weights);
    device_used_ += device_bytes;
  }
  slot->pinned_ = pinned;
  slot->last_use_ = ++clock_;
  slots_.insert(slot.get());
  PublishLocked(*slot);
  return slot;
}

std::shared_ptr<engine::AdapterLease> AdapterCache::Lease(std::shared_ptr<CacheSlot> slot) {
  bool waiting = false;
  {
    absl::MutexLock lock(&mu_);
    ++slot->leases_;
    slot->last_use_ = ++clock_;
    if (slot->device_ != nullptr) {
      ++counters_.hits;
      if (metrics_ != nullptr) metrics_->RecordAdapterCacheHit();
    } else {
      ++counters_.misses;
      if (metrics_ != nullptr) metrics_->RecordAdapterCacheMiss(TierName(TierLocked(*slot)));
      waiting = true;
      ++counters_.waiting_leases;
      if (!slot->loading_) slot->load_error_ = absl::OkStatus();  // a new attempt
      QueueLoadLocked(*slot);
      PublishTiersLocked();
    }
  }
  return std::make_shared<LeaseImpl>(std::move(slot), waiting);
}

void AdapterCache::QueueLoadLocked(CacheSlot& slot) {
  if (slot.loading_ || slot.device_ != nullptr || !slot.load_error_.ok()) return;
  slot.loading_ = true;
  load_queue_.push_back(slot.weak_from_this());
  ++changes_;
}

absl::StatusOr<const model::AdapterWeights*> AdapterCache::Resolve(CacheSlot& slot, bool& waiting) {
  absl::MutexLock lock(&mu_);
  if (slot.device_ != nullptr) {
    slot.last_use_ = ++clock_;
    if (waiting) {
      waiting = false;
      --counters_.waiting_leases;
      PublishTiersLocked();
    }
    return slot.device_.get();
  }
  if (!slot.load_error_.ok() && !slot.loading_) {
    if (waiting) {
      waiting = false;
      --counters_.waiting_leases;
      PublishTiersLocked();
    }
    return slot.load_error_;
  }
  if (!waiting) {  // not resident yet was never the case for this lease before
    waiting = true;
    ++counters_.waiting_leases;
  }
  QueueLoadLocked(slot);
  return nullptr;
}

void AdapterCache::ReleaseLease(CacheSlot& slot, bool waiting) {
  std::vector<std::shared_ptr<const void>> released;
  absl::MutexLock lock(&mu_);
  --slot.leases_;
  if (waiting) --counters_.waiting_leases;
  if (slot.leases_ == 0) {
    ++changes_;  // its bytes are evictable now
    if (slot.offload_when_idle_) {
      slot.offload_when_idle_ = false;
      DropDeviceLocked(slot, released);
      DropHostLocked(slot, released);
      PublishLocked(slot);
    }
  }
  PublishTiersLocked();
}

absl::Status AdapterCache::Offload(CacheSlot& slot) {
  std::vector<std::shared_ptr<const void>> released;
  absl::MutexLock lock(&mu_);
  if (!slot.disk_dir_.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "adapter '", slot.id_, "' has no copy on disk to keep (it was uploaded without --adapter_store)"));
  }
  if (slot.pinned_) {
    return absl::FailedPreconditionError(absl::StrCat("adapter '", slot.id_, "' is pinned"));
  }
  if (slot.leases_ > 0) {
    slot.offload_when_idle_ = true;
    return absl::OkStatus();
  }
  DropDeviceLocked(slot, released);
  DropHostLocked(slot, released);
  PublishLocked(slot);
  return absl::OkStatus();
}

void AdapterCache::Forget(CacheSlot* slot) {
  std::vector<std::shared_ptr<const void>> released;
  absl::MutexLock lock(&mu_);
  DropDeviceLocked(*slot, released);
  DropHostLocked(*slot, released);
  slots_.erase(slot);
  if (metrics_ != nullptr && slot->reported_) {
    metrics_->MoveAdapterResidency(slot->id_, TierName(slot->reported_tier_), "");
  }
  PublishTiersLocked();
}

void AdapterCache::LoaderLoop() {
  // At options_.loader_nice (by default below the engine, so on a busy machine
  // the batch that is decoding gets the CPU first). Linux nice values are per thread.
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), options_.loader_nice) != 0) {
    LOG(WARNING) << "could not set the adapter loader thread's nice value to " << options_.loader_nice;
  }
  uint64_t seen = 0;
  while (true) {
    // Declared before the lock: slots and bytes let go of here are freed
    // after it (a slot's destructor takes the lock).
    std::vector<std::shared_ptr<CacheSlot>> skipped;
    std::vector<std::shared_ptr<const void>> released;
    std::shared_ptr<CacheSlot> slot;
    std::shared_ptr<const UploadSource> host;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || (!load_queue_.empty() && changes_ != seen);
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      seen = changes_;
      // The first queued adapter that room can be made for; the others wait
      // for leases to end.
      for (auto it = load_queue_.begin(); it != load_queue_.end();) {
        std::shared_ptr<CacheSlot> s = it->lock();
        if (s == nullptr || s->device_ != nullptr || s->leases_ == 0) {
          if (s != nullptr) s->loading_ = false;
          it = load_queue_.erase(it);
          skipped.push_back(std::move(s));
          continue;
        }
        if (options_.device_bytes > 0) {
          int64_t pinned = 0;
          for (const CacheSlot* c : slots_) pinned += c->pinned_ && c->device_ != nullptr ? c->device_bytes_ : 0;
          if (pinned + s->device_bytes_ > options_.device_bytes) {  // would wait forever
            s->loading_ = false;
            s->load_error_ = absl::ResourceExhaustedError(absl::StrCat(
                "adapter '", s->id_, "' (", s->device_bytes_, " bytes) cannot fit on the device tier beside the pinned "
                "adapters (", pinned, " bytes of --adapter_device_bytes=", options_.device_bytes, ")"));
            ++counters_.load_failures;
            it = load_queue_.erase(it);
            skipped.push_back(std::move(s));
            continue;
          }
        }
        if (MakeDeviceRoomLocked(s->device_bytes_, s.get(), released)) {
          slot = std::move(s);
          load_queue_.erase(it);
          break;
        }
        skipped.push_back(std::move(s));
        ++it;
      }
      if (slot == nullptr) continue;
      device_reserved_ += slot->device_bytes_;
      host = slot->host_;
      PublishTiersLocked();
    }
    const Tier source = host != nullptr ? Tier::kHost : Tier::kDisk;
    const absl::Time start = absl::Now();
    std::shared_ptr<const UploadSource> read;  // the files, when they came from disk
    absl::StatusOr<std::shared_ptr<const model::AdapterWeights>> built = [&]()
        -> absl::StatusOr<std::shared_ptr<const model::AdapterWeights>> {
      const std::string label = slot->disk_dir_.value_or(std::string("upload"));
      if (host == nullptr) {
        absl::StatusOr<std::map<std::string, std::string>> f = ReadAdapterFilesIntoMemory(*slot->disk_dir_);
        if (!f.ok()) return f.status();
        auto files = std::make_shared<UploadSource>();
        files->files = *std::move(f);
        read = std::move(files);
      }
      // Parsed where they lie: the host copy, or what was just read (which
      // then becomes the host copy when the budget allows).
      absl::StatusOr<AdapterFiles> af = AdapterFilesFromShared(host != nullptr ? host : read, label);
      if (!af.ok()) return af.status();
      absl::StatusOr<LoadedAdapter> loaded = LoadAdapter(*af, *base_);
      if (!loaded.ok()) return loaded.status();
      if (loaded->weights->bytes() != slot->device_bytes_) {
        return absl::FailedPreconditionError(absl::StrCat(
            label, ": the adapter changed since it was registered (", loaded->weights->bytes(),
            " bytes of weights, not ", slot->device_bytes_, "); load it again"));
      }
      return std::shared_ptr<const model::AdapterWeights>(std::move(loaded->weights));
    }();
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    {
      absl::MutexLock lock(&mu_);
      device_reserved_ -= slot->device_bytes_;
      slot->loading_ = false;
      ++changes_;
      if (built.ok()) {
        // Observed before the weights are published, so whoever sees them sees the load counted.
        if (metrics_ != nullptr) metrics_->RecordAdapterTierLoad(TierName(source), seconds);
        slot->device_ = *std::move(built);
        device_used_ += slot->device_bytes_;
        ++(source == Tier::kHost ? counters_.loads_from_host : counters_.loads_from_disk);
        if (read != nullptr && slot->host_ == nullptr && FileBytes(*read) == slot->host_bytes_ &&
            MakeHostRoomLocked(slot->host_bytes_, slot.get(), released)) {
          slot->host_ = std::move(read);
          host_used_ += slot->host_bytes_;
        }
      } else {
        slot->load_error_ = built.status();
        ++counters_.load_failures;
      }
      PublishLocked(*slot);
    }
    if (!built.ok()) {
      LOG(WARNING) << "adapter " << slot->id_ << " could not be brought in from " << TierName(source)
                   << ": " << built.status();
    }
  }
}

AdapterCache::Stats AdapterCache::GetStats() const {
  absl::MutexLock lock(&mu_);
  return StatsLocked();
}

}  // namespace adapterd::adapters
