#include "adapters/adapter_cache.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <atomic>
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
  for (const char* name : kAdapterFileNames) {
    const auto size = std::filesystem::file_size(std::filesystem::path(dir) / name, ec);
    if (!ec) n += static_cast<int64_t>(size);
  }
  return n;
}

bool Fits(int64_t used, int64_t bytes, int64_t budget) { return budget <= 0 || used + bytes <= budget; }

}  // namespace

// A request's claim on one slot. Its result is written once by the cache,
// under the cache's mutex, before `settled_` is released; readers acquire
// `settled_` first, so weights() takes no lock.
class AdapterCache::LeaseImpl final : public model::AdapterLease {
 public:
  explicit LeaseImpl(std::shared_ptr<CacheSlot> slot) : slot_(std::move(slot)) {}
  ~LeaseImpl() override { slot_->cache_->ReleaseLease(*this); }

  const std::string& adapter_id() const override { return slot_->id(); }
  int64_t num_virtual_tokens() const override { return slot_->num_virtual_tokens_; }
  absl::StatusOr<const model::AdapterWeights*> weights() const override {
    if (!settled_.load(std::memory_order_acquire)) return nullptr;
    if (!error_.ok()) return error_;
    return weights_;
  }
  void NotifyWhenSettled(absl::AnyInvocable<void()> settled) override {
    slot_->cache_->NotifyWhenSettled(*this, std::move(settled));
  }

 private:
  friend class AdapterCache;
  void Settle(const model::AdapterWeights* weights, absl::Status error) {
    weights_ = weights;
    error_ = std::move(error);
    settled_.store(true, std::memory_order_release);
  }

  const std::shared_ptr<CacheSlot> slot_;
  const model::AdapterWeights* weights_ = nullptr;
  absl::Status error_;
  std::atomic<bool> settled_{false};
};

CacheSlot::~CacheSlot() { cache_->Forget(this); }

AdapterCache::AdapterCache(const model::LlamaModel* base, AdapterCacheOptions options,
                           metrics::AdapterMetrics* metrics)
    : base_(base), options_(options), metrics_(metrics),
      pool_(base != nullptr ? base->lora_slot_pool() : nullptr) {
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

AdapterCache::SlotState& AdapterCache::StateLocked(const CacheSlot& slot) { return slots_.at(&slot); }
const AdapterCache::SlotState& AdapterCache::StateLocked(const CacheSlot& slot) const { return slots_.at(&slot); }

Tier AdapterCache::TierLocked(const SlotState& st) const {
  if (st.device != nullptr) return Tier::kDevice;
  if (st.host != nullptr) return Tier::kHost;
  return Tier::kDisk;
}

Tier AdapterCache::TierOf(const CacheSlot& slot) const {
  absl::MutexLock lock(&mu_);
  return TierLocked(StateLocked(slot));
}

bool AdapterCache::Pinned(const CacheSlot& slot) const {
  absl::MutexLock lock(&mu_);
  return StateLocked(slot).pinned;
}

void AdapterCache::PublishLocked(SlotState& st) {
  const Tier t = TierLocked(st);
  if (metrics_ != nullptr && (!st.reported || t != st.reported_tier)) {
    metrics_->MoveAdapterResidency(st.slot->id(), st.reported ? TierName(st.reported_tier) : "", TierName(t));
  }
  st.reported = true;
  st.reported_tier = t;
  PublishTiersLocked();
}

AdapterCache::Stats AdapterCache::StatsLocked() const {
  Stats s = counters_;
  for (const auto& [slot, st] : slots_) {
    if (st.device != nullptr) ++s.device_adapters;
    if (st.host != nullptr) ++s.host_adapters;
    if (st.disk.has_value()) {
      ++s.disk_adapters;
      s.disk_bytes += slot->host_bytes();
    }
  }
  s.device_bytes = device_used_ + device_reserved_;
  s.host_bytes = host_used_;
  return s;
}

void AdapterCache::NotePeaksLocked() {
  counters_.peak_device_bytes = std::max(counters_.peak_device_bytes, device_used_ + device_reserved_);
  counters_.peak_host_bytes = std::max(counters_.peak_host_bytes, host_used_);
}

void AdapterCache::PublishTiersLocked() {
  if (metrics_ == nullptr) return;
  const Stats s = StatsLocked();
  metrics_->SetTierUsage("device", s.device_adapters, s.device_bytes, options_.device_bytes);
  metrics_->SetTierUsage("host", s.host_adapters, s.host_bytes, options_.host_bytes);
  metrics_->SetTierUsage("disk", s.disk_adapters, s.disk_bytes, 0);
  metrics_->requests_waiting_on_load().Set(static_cast<double>(s.waiting_leases));
}

void AdapterCache::DropDeviceLocked(SlotState& st, std::vector<std::shared_ptr<const void>>& released) {
  if (st.device == nullptr) return;
  released.push_back(std::move(st.device));
  st.device.reset();
  device_used_ -= st.slot->device_bytes();
  ++changes_;
}

void AdapterCache::DropHostLocked(SlotState& st, std::vector<std::shared_ptr<const void>>& released) {
  if (st.host == nullptr) return;
  released.push_back(std::move(st.host));
  st.host.reset();
  host_used_ -= st.slot->host_bytes();
}

bool AdapterCache::MakeDeviceRoomLocked(int64_t bytes, const SlotState* except,
                                        std::vector<std::shared_ptr<const void>>& released) {
  const int64_t budget = options_.device_bytes;
  if (Fits(device_used_ + device_reserved_, bytes, budget)) return true;
  std::vector<SlotState*> idle;
  int64_t freeable = 0;
  for (auto& [slot, st] : slots_) {
    if (&st != except && st.device != nullptr && st.leases == 0 && !st.pinned) {
      idle.push_back(&st);
      freeable += slot->device_bytes();
    }
  }
  if (!Fits(device_used_ + device_reserved_ - freeable, bytes, budget)) return false;
  std::sort(idle.begin(), idle.end(), [](const SlotState* a, const SlotState* b) { return a->last_use < b->last_use; });
  for (SlotState* st : idle) {
    if (Fits(device_used_ + device_reserved_, bytes, budget)) break;
    DropDeviceLocked(*st, released);
    ++counters_.evictions_device;
    if (metrics_ != nullptr) metrics_->RecordAdapterEviction("device");
    PublishLocked(*st);
  }
  return true;
}

int64_t AdapterCache::FreePoolSlotsLocked() const {
  if (pool_ == nullptr) return 0;
  int64_t held = slot_reserved_ ? 1 : 0;
  for (const auto& [slot, st] : slots_) held += st.device != nullptr && st.device->pool_slot() >= 0 ? 1 : 0;
  return pool_->num_slots() - held;
}

bool AdapterCache::MakeSlotRoomLocked(const SlotState* except, std::vector<std::shared_ptr<const void>>& released) {
  if (FreePoolSlotsLocked() > 0) return true;
  SlotState* lru = nullptr;
  for (auto& [slot, st] : slots_) {
    if (&st == except || st.device == nullptr || st.device->pool_slot() < 0 || st.leases > 0 || st.pinned) continue;
    if (lru == nullptr || st.last_use < lru->last_use) lru = &st;
  }
  if (lru == nullptr) return false;
  DropDeviceLocked(*lru, released);
  ++counters_.evictions_device;
  if (metrics_ != nullptr) metrics_->RecordAdapterEviction("device");
  PublishLocked(*lru);
  return true;
}

bool AdapterCache::MakeHostRoomLocked(int64_t bytes, const SlotState* except,
                                      std::vector<std::shared_ptr<const void>>& released) {
  const int64_t budget = options_.host_bytes;
  if (Fits(host_used_, bytes, budget)) return true;
  // Only copies that can be read back from disk may go.
  std::vector<SlotState*> idle;
  int64_t freeable = 0;
  for (auto& [slot, st] : slots_) {
    if (&st != except && st.host != nullptr && st.disk.has_value() && !st.loading) {
      idle.push_back(&st);
      freeable += slot->host_bytes();
    }
  }
  if (!Fits(host_used_ - freeable, bytes, budget)) return false;
  std::sort(idle.begin(), idle.end(), [](const SlotState* a, const SlotState* b) { return a->last_use < b->last_use; });
  for (SlotState* st : idle) {
    if (Fits(host_used_, bytes, budget)) break;
    DropHostLocked(*st, released);
    ++counters_.evictions_host;
    if (metrics_ != nullptr) metrics_->RecordAdapterEviction("host");
    PublishLocked(*st);
  }
  return true;
}

absl::StatusOr<std::shared_ptr<CacheSlot>> AdapterCache::Insert(
    std::string id, std::shared_ptr<const model::AdapterWeights> weights,
    std::shared_ptr<const UploadSource> files, std::optional<DiskCopy> disk, bool pinned) {
  const int64_t device_bytes = weights->bytes();
  const int64_t host_bytes = files != nullptr ? FileBytes(*files) : disk.has_value() ? DirFileBytes(disk->dir) : 0;
  if (options_.device_bytes > 0 && device_bytes > options_.device_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "adapter '", id, "' needs ", device_bytes, " bytes on the device tier, more than its whole budget (--adapter_device_bytes=",
        options_.device_bytes, ")"));
  }
  if (!disk.has_value() && files == nullptr) {
    return absl::InternalError(absl::StrCat("adapter '", id, "' has neither files nor a directory"));
  }
  const int64_t virtual_tokens = weights->num_virtual_tokens();
  const bool wants_pool_slot = pool_ != nullptr && pool_->Fits(*weights);
  auto slot = std::shared_ptr<CacheSlot>(
      new CacheSlot(this, id, device_bytes, host_bytes, virtual_tokens, wants_pool_slot));
  std::vector<std::shared_ptr<const void>> released;  // freed after the lock
  absl::MutexLock lock(&mu_);
  if (!disk.has_value() && !MakeHostRoomLocked(host_bytes, nullptr, released)) {
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
  SlotState& st = slots_[slot.get()];
  st.slot = slot.get();
  if (files != nullptr && (!disk.has_value() || MakeHostRoomLocked(host_bytes, nullptr, released))) {
    st.host = std::move(files);
    host_used_ += host_bytes;
  }
  st.disk = std::move(disk);
  if (device_room) {
    st.device = std::move(weights);
    device_used_ += device_bytes;
  }
  st.pinned = pinned;
  st.last_use = ++clock_;
  NotePeaksLocked();
  PublishLocked(st);
  return slot;
}

void AdapterCache::AttachDisk(CacheSlot& slot, DiskCopy disk) {
  absl::MutexLock lock(&mu_);
  SlotState& st = StateLocked(slot);
  st.disk = std::move(disk);
  PublishTiersLocked();
}

std::shared_ptr<model::AdapterLease> AdapterCache::Lease(std::shared_ptr<CacheSlot> slot) {
  auto lease = std::make_shared<LeaseImpl>(slot);
  absl::MutexLock lock(&mu_);
  SlotState& st = StateLocked(*slot);
  ++st.leases;
  st.last_use = ++clock_;
  if (st.device != nullptr) {
    ++counters_.hits;
    if (metrics_ != nullptr) metrics_->RecordAdapterCacheHit();
    lease->Settle(st.device.get(), absl::OkStatus());
    return lease;
  }
  ++counters_.misses;
  if (metrics_ != nullptr) metrics_->RecordAdapterCacheMiss(TierName(TierLocked(st)));
  ++counters_.waiting_leases;
  st.waiting.emplace_back(lease.get(), nullptr);
  if (!st.loading) st.load_error = absl::OkStatus();  // a new attempt
  QueueLoadLocked(st);
  PublishTiersLocked();
  return lease;
}

void AdapterCache::NotifyWhenSettled(LeaseImpl& lease, absl::AnyInvocable<void()> settled) {
  {
    absl::MutexLock lock(&mu_);
    for (auto& [waiter, callback] : StateLocked(*lease.slot_).waiting) {
      if (waiter != &lease) continue;
      if (callback == nullptr) callback = std::move(settled);
      return;
    }
  }
  settled();  // already settled
}

void AdapterCache::QueueLoadLocked(SlotState& st) {
  if (st.loading || st.device != nullptr || !st.load_error.ok()) return;
  st.loading = true;
  load_queue_.push_back(st.slot->weak_from_this());
  ++changes_;
}

void AdapterCache::SettleWaitingLocked(SlotState& st, const absl::Status& error, Settled& settled) {
  for (auto& [lease, callback] : st.waiting) {
    lease->Settle(error.ok() ? st.device.get() : nullptr, error);
    if (callback != nullptr) settled.push_back(std::move(callback));
    --counters_.waiting_leases;
  }
  st.waiting.clear();
  PublishTiersLocked();
}

void AdapterCache::ReleaseLease(LeaseImpl& lease) {
  std::vector<std::shared_ptr<const void>> released;
  absl::AnyInvocable<void()> unused_callback;  // destroyed after the lock
  absl::MutexLock lock(&mu_);
  SlotState& st = StateLocked(*lease.slot_);
  --st.leases;
  auto it = std::find_if(st.waiting.begin(), st.waiting.end(), [&](const auto& w) { return w.first == &lease; });
  if (it != st.waiting.end()) {
    unused_callback = std::move(it->second);
    st.waiting.erase(it);
    --counters_.waiting_leases;
  }
  if (st.leases == 0) {
    ++changes_;  // its bytes are evictable now
    if (st.offload_when_idle) {
      st.offload_when_idle = false;
      DropDeviceLocked(st, released);
      DropHostLocked(st, released);
      PublishLocked(st);
    }
  }
  PublishTiersLocked();
}

absl::Status AdapterCache::Offload(CacheSlot& slot) {
  std::vector<std::shared_ptr<const void>> released;
  absl::MutexLock lock(&mu_);
  SlotState& st = StateLocked(slot);
  if (!st.disk.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "adapter '", slot.id(), "' has no copy on disk to keep (it was uploaded without --adapter_store)"));
  }
  if (st.pinned) return absl::FailedPreconditionError(absl::StrCat("adapter '", slot.id(), "' is pinned"));
  if (st.leases > 0) {
    st.offload_when_idle = true;
    return absl::OkStatus();
  }
  DropDeviceLocked(st, released);
  DropHostLocked(st, released);
  PublishLocked(st);
  return absl::OkStatus();
}

void AdapterCache::Forget(CacheSlot* slot) {
  std::vector<std::shared_ptr<const void>> released;
  std::optional<DiskCopy> disk;  // its hold is let go of after the lock
  absl::MutexLock lock(&mu_);
  auto it = slots_.find(slot);
  if (it == slots_.end()) return;  // Insert refused it
  SlotState& st = it->second;
  DropDeviceLocked(st, released);
  DropHostLocked(st, released);
  disk = std::move(st.disk);
  if (metrics_ != nullptr && st.reported) metrics_->MoveAdapterResidency(slot->id(), TierName(st.reported_tier), "");
  slots_.erase(it);
  PublishTiersLocked();
}

std::shared_ptr<CacheSlot> AdapterCache::NextLoadLocked(std::vector<std::shared_ptr<const void>>& released,
                                                        Settled& settled) {
  for (auto it = load_queue_.begin(); it != load_queue_.end();) {
    std::shared_ptr<CacheSlot> s = it->lock();
    SlotState* st = s != nullptr ? &StateLocked(*s) : nullptr;
    if (st == nullptr || st->device != nullptr || st->leases == 0) {
      if (st != nullptr) st->loading = false;
      it = load_queue_.erase(it);
      released.push_back(std::move(s));
      continue;
    }
    if (options_.device_bytes > 0) {
      int64_t pinned = 0;
      for (const auto& [slot, other] : slots_) pinned += other.pinned && other.device != nullptr ? slot->device_bytes() : 0;
      if (pinned + s->device_bytes() > options_.device_bytes) {  // would wait forever
        st->loading = false;
        st->load_error = absl::ResourceExhaustedError(absl::StrCat(
            "adapter '", s->id(), "' (", s->device_bytes(), " bytes) cannot fit on the device tier beside the pinned "
            "adapters (", pinned, " bytes of --adapter_device_bytes=", options_.device_bytes, ")"));
        ++counters_.load_failures;
        SettleWaitingLocked(*st, st->load_error, settled);
        it = load_queue_.erase(it);
        released.push_back(std::move(s));
        continue;
      }
    }
    if (MakeDeviceRoomLocked(s->device_bytes(), st, released)) {
      load_queue_.erase(it);
      device_reserved_ += s->device_bytes();
      slot_reserved_ = s->wants_pool_slot() && MakeSlotRoomLocked(st, released);
      NotePeaksLocked();
      PublishTiersLocked();
      return s;
    }
    ++counters_.deferred_loads;
    released.push_back(std::move(s));
    ++it;
  }
  return nullptr;
}

void AdapterCache::FinishLoadLocked(SlotState& st, absl::StatusOr<std::shared_ptr<const model::AdapterWeights>> built,
                                    std::shared_ptr<const UploadSource> read, Tier source, double seconds,
                                    std::vector<std::shared_ptr<const void>>& released, Settled& settled) {
  const CacheSlot& slot = *st.slot;
  device_reserved_ -= slot.device_bytes();
  slot_reserved_ = false;
  st.loading = false;
  ++changes_;
  if (built.ok()) {
    // Observed before the weights are published, so whoever sees them sees the load counted.
    if (metrics_ != nullptr) metrics_->RecordAdapterTierLoad(TierName(source), seconds);
    st.device = *std::move(built);
    device_used_ += slot.device_bytes();
    ++(source == Tier::kHost ? counters_.loads_from_host : counters_.loads_from_disk);
    if (read != nullptr && st.host == nullptr && FileBytes(*read) == slot.host_bytes() &&
        MakeHostRoomLocked(slot.host_bytes(), &st, released)) {
      st.host = std::move(read);
      host_used_ += slot.host_bytes();
    }
    NotePeaksLocked();
    SettleWaitingLocked(st, absl::OkStatus(), settled);
  } else {
    st.load_error = built.status();
    ++counters_.load_failures;
    SettleWaitingLocked(st, st.load_error, settled);
  }
  PublishLocked(st);
}

namespace {

// Reads (when there is no host copy) and builds one adapter, checking that
// it is the version that was registered.
absl::StatusOr<std::shared_ptr<const model::AdapterWeights>> BuildFromTier(
    const CacheSlot& slot, const std::shared_ptr<const UploadSource>& host, const std::optional<std::string>& dir,
    const model::LlamaModel& base, std::shared_ptr<const UploadSource>& read) {
  const std::string label = dir.value_or(std::string("upload"));
  if (host == nullptr) {
    if (!dir.has_value()) return absl::InternalError(absl::StrCat(label, ": no copy to load from"));
    absl::StatusOr<std::map<std::string, std::string>> f = ReadAdapterFilesIntoMemory(*dir);
    if (!f.ok()) return f.status();
    auto files = std::make_shared<UploadSource>();
    files->files = *std::move(f);
    read = std::move(files);
  }
  // Parsed where they lie: the host copy, or what was just read (which then
  // becomes the host copy when the budget allows).
  absl::StatusOr<AdapterFiles> af = AdapterFilesFromShared(host != nullptr ? host : read, label);
  if (!af.ok()) return af.status();
  absl::StatusOr<LoadedAdapter> loaded = LoadAdapter(*af, base);
  if (!loaded.ok()) return loaded.status();
  if (loaded->weights->bytes() != slot.device_bytes()) {
    return absl::FailedPreconditionError(absl::StrCat(
        label, ": the adapter changed since it was registered (", loaded->weights->bytes(),
        " bytes of weights, not ", slot.device_bytes(), "); load it again"));
  }
  return std::shared_ptr<const model::AdapterWeights>(std::move(loaded->weights));
}

void RunAll(std::vector<absl::AnyInvocable<void()>>& callbacks) {
  for (auto& cb : callbacks) cb();
  callbacks.clear();
}

}  // namespace

void AdapterCache::LoaderLoop() {
  // At options_.loader_nice (by default below the engine, so on a busy machine
  // the batch that is decoding gets the CPU first). Linux nice values are per thread.
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), options_.loader_nice) != 0) {
    LOG(WARNING) << "could not set the adapter loader thread's nice value to " << options_.loader_nice;
  }
  uint64_t seen = 0;
  while (true) {
    // Declared before the lock: slots and bytes let go of here are freed
    // after it (a slot's destructor takes the lock), and callbacks run after it.
    std::vector<std::shared_ptr<const void>> released;
    Settled settled;
    std::shared_ptr<CacheSlot> slot;
    std::shared_ptr<const UploadSource> host;
    std::optional<std::string> dir;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || (!load_queue_.empty() && changes_ != seen);
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      seen = changes_;
      slot = NextLoadLocked(released, settled);
      if (slot != nullptr) {
        const SlotState& st = StateLocked(*slot);
        host = st.host;
        if (st.disk.has_value()) dir = st.disk->dir;
      }
    }
    // What was evicted for this load goes before it is built: its pool slot
    // is then free for it.
    released.clear();
    RunAll(settled);
    if (slot == nullptr) continue;
    const Tier source = host != nullptr ? Tier::kHost : Tier::kDisk;
    const absl::Time start = absl::Now();
    std::shared_ptr<const UploadSource> read;  // the files, when they came from disk
    absl::StatusOr<std::shared_ptr<const model::AdapterWeights>> built = BuildFromTier(*slot, host, dir, *base_, read);
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (!built.ok()) {
      LOG(WARNING) << "adapter " << slot->id() << " could not be brought in from " << TierName(source) << ": "
                   << built.status();
    }
    {
      absl::MutexLock lock(&mu_);
      FinishLoadLocked(StateLocked(*slot), std::move(built), std::move(read), source, seconds, released, settled);
    }
    RunAll(settled);
  }
}

AdapterCache::Stats AdapterCache::GetStats() const {
  absl::MutexLock lock(&mu_);
  return StatsLocked();
}

}  // namespace adapterd::adapters
