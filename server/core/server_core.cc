#include "server/core/server_core.h"

#include <utility>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "adapters/demo_adapters.h"
#include "server/model/demo_checkpoint.h"

namespace adapterd::core {
namespace {

// Forwards a request's output and, when it finishes, does the per-adapter
// accounting and lets go of the adapter before the transport hears of it.
class AccountingSink final : public engine::ResultSink {
 public:
  AccountingSink(std::shared_ptr<engine::ResultSink> inner, std::shared_ptr<const adapters::Adapter> adapter,
                 metrics::AdapterMetrics* metrics)
      : inner_(std::move(inner)), adapter_(std::move(adapter)), metrics_(metrics) {}

  void OnTokens(std::span<const int64_t> tokens, std::span<const float> logprobs) override {
    inner_->OnTokens(tokens, logprobs);
  }
  void OnFinish(const engine::Finish& f) override {
    if (adapter_ != nullptr) adapter_->RecordRequest(f.completion_tokens);
    if (metrics_ != nullptr) metrics_->RecordAdapterRequest(adapter_ ? adapter_->id() : "", f.completion_tokens);
    adapter_.reset();
    inner_->OnFinish(f);
  }

 private:
  const std::shared_ptr<engine::ResultSink> inner_;
  std::shared_ptr<const adapters::Adapter> adapter_;  // engine thread only
  metrics::AdapterMetrics* const metrics_;
};

std::string StatusCodeName(const absl::Status& s) { return absl::StatusCodeToString(s.code()); }

}  // namespace

absl::StatusOr<std::unique_ptr<ServerCore>> ServerCore::Create(ServerCoreOptions options,
                                                              prometheus::Registry& metrics) {
  std::unique_ptr<ServerCore> core(new ServerCore());
  if (absl::Status st = core->Start(std::move(options), metrics); !st.ok()) return st;
  return core;
}

ServerCore::~ServerCore() {
  // The engine's requests hold leases into the registry's cache, and the
  // registry reads the engine's model: stop the engine thread first, then
  // the registry, then free the model.
  if (engine_ != nullptr) engine_->Shutdown(absl::ZeroDuration());
  registry_.reset();
  engine_.reset();
}

absl::Status ServerCore::Start(ServerCoreOptions options, prometheus::Registry& metrics) {
  demo_ = options.model_dir.empty();
  model_dir_ = options.model_dir;
  if (demo_) {
    absl::StatusOr<std::string> dir = model::EnsureDemoCheckpoint(options.cache_dir);
    if (!dir.ok()) return dir.status();
    model_dir_ = *dir;
    LOG(INFO) << "no --model given: serving the demo model at " << model_dir_;
  }
  if (options.cache.device_bytes < 0 || options.cache.host_bytes < 0) {
    return absl::InvalidArgumentError("--adapter_device_bytes and --adapter_host_bytes must be >= 0");
  }
  if (options.cache.loader_nice < 0 || options.cache.loader_nice > 19) {
    return absl::InvalidArgumentError(
        absl::StrCat("--adapter_loader_nice must be in [0, 19], not ", options.cache.loader_nice));
  }
  absl::StatusOr<adapters::PathPolicy> paths = adapters::PathPolicy::Create(options.adapter_roots);
  if (!paths.ok()) return paths.status();
  paths_ = *std::move(paths);

  const absl::Time load_start = absl::Now();
  absl::StatusOr<std::unique_ptr<model::LlamaModel>> model = model::LlamaModel::Load(model_dir_, options.model);
  if (!model.ok()) return model.status();
  const model::ModelConfig& config = (*model)->config();
  LOG(INFO) << "model " << config.architecture_name << ": " << config.num_layers << " layers, hidden "
            << config.hidden_size << ", vocab " << config.vocab_size << ", " << (*model)->weight_bytes()
            << " weight bytes, loaded in " << absl::FormatDuration(absl::Now() - load_start);

  labels_ = std::make_unique<metrics::AdapterLabels>(options.metrics_max_adapter_labels);
  engine_metrics_ = std::make_unique<metrics::EngineMetrics>(metrics, labels_.get());
  adapter_metrics_ = std::make_unique<metrics::AdapterMetrics>(metrics, labels_.get());
  absl::StatusOr<std::unique_ptr<engine::Engine>> engine =
      engine::Engine::Create(*std::move(model), options.engine, engine_metrics_.get());
  if (!engine.ok()) return engine.status();
  engine_ = *std::move(engine);
  if (!options.adapter_store.empty()) {
    absl::StatusOr<std::unique_ptr<adapters::AdapterStore>> s = adapters::AdapterStore::Open(options.adapter_store);
    if (!s.ok()) return s.status();
    store_ = *std::move(s);
  }
  // The registry reads the base model's weights (for validation and DoRA)
  // while the engine runs it; both only read them.
  registry_ = std::make_unique<adapters::AdapterRegistry>(engine_->model(), store_.get(), options.cache,
                                                          adapter_metrics_.get());
  if (absl::Status st = Restore(options); !st.ok()) return st;
  PublishAdapterGauges();
  return absl::OkStatus();
}

absl::Status ServerCore::Restore(const ServerCoreOptions& options) {
  // Loads one adapter and waits for it, without recording it in the store.
  auto load_now = [this](const std::string& id, adapters::AdapterSource source, bool pin) {
    absl::Notification loaded;
    absl::Status result;
    absl::Status st = registry_->StartLoad(
        id, std::move(source), false,
        [&](absl::StatusOr<adapters::AdapterInfo> r) {
          result = r.status();
          loaded.Notify();
        },
        /*persist=*/false, pin);
    if (st.ok()) loaded.WaitForNotification();
    return st.ok() ? result : st;
  };
  if (store_ != nullptr) {
    const absl::Time start = absl::Now();
    adapters::StoreScan scan = store_->Scan();
    for (const absl::Status& skipped : scan.skipped) LOG(WARNING) << "skipped: " << skipped.message();
    int restored = 0;
    for (auto& entry : scan.adapters) {
      if (absl::Status st = load_now(entry.id, std::move(entry.source), entry.pinned); st.ok()) {
        ++restored;
      } else {
        LOG(WARNING) << "adapter store: " << entry.id << " was not restored: " << st;
      }
    }
    LOG(INFO) << "adapter store " << store_->dir() << ": restored " << restored << " of "
              << scan.adapters.size() + scan.skipped.size() << " entries in "
              << absl::FormatDuration(absl::Now() - start);
  }
  if (!demo_ || !options.demo_adapters) return absl::OkStatus();
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> demo_adapters =
      adapters::EnsureDemoAdapters(options.cache_dir, model_config());
  if (!demo_adapters.ok()) return demo_adapters.status();
  for (const auto& [id, dir] : *demo_adapters) {
    if (registry_->Get(id).ok()) continue;  // restored from the store
    if (absl::Status st = load_now(id, adapters::PathSource{dir}, false); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<engine::RequestHandle>> ServerCore::Generate(
    const std::string& adapter_id, engine::GenerationRequest request, std::shared_ptr<engine::ResultSink> sink) {
  std::shared_ptr<const adapters::Adapter> adapter;
  if (!adapter_id.empty()) {
    absl::StatusOr<std::shared_ptr<const adapters::Adapter>> a = registry_->Lookup(adapter_id);
    if (!a.ok()) return a.status();
    adapter = *std::move(a);
    request.adapter = adapter->Lease();  // brings it to the device tier if it is not there
  }
  auto accounting = std::make_shared<AccountingSink>(std::move(sink), std::move(adapter), adapter_metrics_.get());
  return engine_->Submit(std::move(request), std::move(accounting));
}

void ServerCore::LoadAdapter(std::string id, std::string path, bool replace, bool pin, LoadDone done) {
  if (path.empty()) {
    absl::Status st = absl::InvalidArgumentError("path must name a directory");
    RecordLoadResult(st);
    return done(st);
  }
  absl::StatusOr<std::string> confined = paths_->Confine(path);
  if (!confined.ok()) {
    RecordLoadResult(confined.status());
    return done(confined.status());
  }
  StartLoad(std::move(id), adapters::PathSource{*std::move(confined)}, replace, pin, std::move(done));
}

void ServerCore::UploadAdapter(std::string id, adapters::UploadSource files, bool replace, bool pin,
                               LoadDone done) {
  StartLoad(std::move(id), std::move(files), replace, pin, std::move(done));
}

void ServerCore::StartLoad(std::string id, adapters::AdapterSource source, bool replace, bool pin, LoadDone done) {
  auto shared_done = std::make_shared<LoadDone>(std::move(done));
  absl::Status st = registry_->StartLoad(
      std::move(id), std::move(source), replace,
      [this, shared_done](absl::StatusOr<adapters::AdapterInfo> result) {
        RecordLoadResult(result);
        (*shared_done)(std::move(result));
      },
      /*persist=*/true, pin);
  if (!st.ok()) {
    RecordLoadResult(st);
    (*shared_done)(st);
  }
}

void ServerCore::RecordLoadResult(const absl::StatusOr<adapters::AdapterInfo>& result) {
  if (result.ok()) {
    adapter_metrics_->adapter_load_seconds().Observe(absl::ToDoubleSeconds(result->load_duration));
  } else {
    adapter_metrics_->RecordAdapterLoadFailure(StatusCodeName(result.status()));
  }
  PublishAdapterGauges();
}

void ServerCore::PublishAdapterGauges() {
  adapter_metrics_->adapters_loaded().Set(static_cast<double>(registry_->ready_count()));
  adapter_metrics_->adapter_bytes().Set(static_cast<double>(registry_->live_bytes()));
}

absl::Status ServerCore::UnloadAdapter(const std::string& id, bool keep_on_disk) {
  absl::Status st = registry_->Unload(id, keep_on_disk);
  PublishAdapterGauges();
  return st;
}

std::vector<adapters::AdapterInfo> ServerCore::ListAdapters() const {
  std::vector<adapters::AdapterInfo> out = registry_->List();
  adapter_metrics_->adapter_bytes().Set(static_cast<double>(registry_->live_bytes()));
  return out;
}

absl::StatusOr<adapters::AdapterInfo> ServerCore::GetAdapter(const std::string& id) const {
  return registry_->Get(id);
}

void ServerCore::BeginShutdown(absl::Duration grace) { engine_->BeginShutdown(grace); }

bool ServerCore::AwaitStopped(absl::Time deadline) { return engine_->AwaitStopped(deadline); }

bool ServerCore::serving() const { return engine_->accepting(); }

}  // namespace adapterd::core
