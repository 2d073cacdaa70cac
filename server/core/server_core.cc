#include "server/core/server_core.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include <c10/core/ScalarType.h>

#include "absl/log/log.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "adapters/demo_adapters.h"
#include "server/core/classify_output.h"
#include "server/core/composition.h"
#include "server/core/request_output.h"
#include "server/core/trained_demo.h"
#include "server/model/demo_checkpoint.h"
#include "server/model/model_config.h"

namespace adapterd::core {
namespace {

// The weight budget, checked from config.json before anything is loaded.
absl::Status CheckWeightBudget(const std::string& model_dir, const ServerCoreOptions& options) {
  if (options.max_weight_bytes <= 0) return absl::OkStatus();
  absl::StatusOr<model::ModelConfig> config = model::ModelConfig::FromDirectory(model_dir);
  if (!config.ok()) return config.status();
  const int64_t params = config->NumParameters();
  const int64_t need = params * static_cast<int64_t>(c10::elementSize(options.model.dtype));
  if (need <= options.max_weight_bytes) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the base model's weights need ", need, " bytes (", params, " parameters in ",
      c10::toString(options.model.dtype), "), over the weight budget of ", options.max_weight_bytes,
      " bytes (--max_weight_bytes) on ", options.model.device.str()));
}

std::string StatusCodeName(const absl::Status& s) { return absl::StatusCodeToString(s.code()); }

// The name KV cache dtypes have in vLLM's cache_config_info.
std::string DtypeName(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::BFloat16: return "bfloat16";
    case c10::ScalarType::Half: return "float16";
    default: return "float32";
  }
}

// Logs the LoRA slot pool's size and keeps adapterd_adapter_slots current.
void ReportSlotPool(model::LoraSlotPool* pool, metrics::AdapterMetrics* m) {
  if (pool == nullptr) return;
  LOG(INFO) << "adapter slot pool: " << pool->num_slots() << " slots of rank up to " << pool->max_rank() << ", "
            << pool->bytes() << " bytes";
  pool->SetUsageListener([m](int64_t used, int64_t total) { m->SetSlotUsage(used, total); });
}

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
  if (demo_ && options.demo_trained) {
    absl::StatusOr<TrainedDemo> demo = EnsureTrainedDemo(options.cache_dir);
    if (!demo.ok()) return demo.status();
    model_dir_ = demo->model_dir;
    trained_demo_adapters_ = demo->adapters;
    LOG(INFO) << "no --model given: serving the demo model trained on the documentation at " << model_dir_;
  } else if (demo_) {
    absl::StatusOr<std::string> dir = model::EnsureDemoCheckpoint(options.cache_dir);
    if (!dir.ok()) return dir.status();
    model_dir_ = *dir;
    LOG(INFO) << "no --model given: serving the random demo model at " << model_dir_;
  }
  if (options.cache.device_bytes < 0 || options.cache.host_bytes < 0) {
    return absl::InvalidArgumentError("--adapter_device_bytes and --adapter_host_bytes must be >= 0");
  }
  if (options.max_adapters_per_request < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--max_adapters_per_request must be at least 1, not ",
                                                   options.max_adapters_per_request));
  }
  if (options.cache.loader_nice < 0 || options.cache.loader_nice > 19) {
    return absl::InvalidArgumentError(
        absl::StrCat("--adapter_loader_nice must be in [0, 19], not ", options.cache.loader_nice));
  }
  served_model_name_ = options.served_model_name;
  if (served_model_name_.empty()) {
    served_model_name_ = std::filesystem::path(model_dir_).lexically_normal().filename().string();
    if (served_model_name_.empty()) {
      served_model_name_ = std::filesystem::path(model_dir_).lexically_normal().parent_path().filename().string();
    }
  }
  absl::StatusOr<adapters::PathPolicy> paths = adapters::PathPolicy::Create(options.adapter_roots);
  if (!paths.ok()) return paths.status();
  paths_ = *std::move(paths);
  options_ = options;
  absl::StatusOr<std::unique_ptr<PromptBuilder>> prompts = PromptBuilder::Load(model_dir_);
  if (!prompts.ok()) return prompts.status();
  prompts_ = *std::move(prompts);

  if (absl::Status budget = CheckWeightBudget(model_dir_, options); !budget.ok()) return budget;
  const absl::Time load_start = absl::Now();
  absl::StatusOr<std::unique_ptr<model::LlamaModel>> model = model::LlamaModel::Load(model_dir_, options.model);
  if (!model.ok()) return model.status();
  const model::ModelConfig& config = (*model)->config();
  LOG(INFO) << "model " << config.architecture_name << ": " << config.num_layers << " layers, hidden "
            << config.hidden_size << ", vocab " << config.vocab_size << ", " << (*model)->weight_bytes()
            << " weight bytes, loaded in " << absl::FormatDuration(absl::Now() - load_start) << "; adapter deltas: "
            << (*model)->delta_backend_name() << "; decode steps: "
            << ((*model)->options().decode_steps == model::DecodeSteps::kGraphs    ? "CUDA graphs per batch bucket"
                : (*model)->options().decode_steps == model::DecodeSteps::kBuckets ? "fixed shapes per batch bucket"
                                                                                   : "eager")
            << "; LoRA weights: "
            << (options.model.lora_dtype != c10::ScalarType::Undefined ? DtypeName(options.model.lora_dtype)
                                                                       : std::string("auto (--lora_dtype)"));

  labels_ = std::make_unique<metrics::AdapterLabels>(options.metrics_max_adapter_labels);
  engine_metrics_ = std::make_unique<metrics::EngineMetrics>(metrics, labels_.get(), served_model_name_);
  adapter_metrics_ = std::make_unique<metrics::AdapterMetrics>(metrics, labels_.get());
  ReportSlotPool((*model)->lora_slot_pool(), adapter_metrics_.get());
  absl::StatusOr<std::unique_ptr<engine::Engine>> engine =
      engine::Engine::Create(*std::move(model), options.engine, engine_metrics_.get());
  if (!engine.ok()) return engine.status();
  engine_ = *std::move(engine);
  engine_metrics_->SetCacheConfig(options.engine.kv_block_size, engine_->GetStats().kv_total_blocks,
                                  DtypeName(options.model.dtype), options.engine.prefix_caching);
  if (!options.adapter_store.empty()) {
    adapters::AdapterStoreOptions store_options;
    store_options.shared = options.adapter_store_sync > absl::ZeroDuration();
    store_options.superseded_grace = std::max(absl::Seconds(60), 3 * options.adapter_store_sync);
    absl::StatusOr<std::unique_ptr<adapters::AdapterStore>> s =
        adapters::AdapterStore::Open(options.adapter_store, store_options);
    if (!s.ok()) return s.status();
    store_ = *std::move(s);
  }
  // The registry reads the base model's weights (for validation and DoRA)
  // while the engine runs it; both only read them.
  registry_ = std::make_unique<adapters::AdapterRegistry>(engine_->model(), store_.get(), options.cache,
                                                          adapter_metrics_.get());
  if (absl::Status st = Restore(options); !st.ok()) return st;
  if (store_ != nullptr && store_->shared()) {
    store_sync_ = std::make_unique<adapters::StoreSync>(registry_.get(), store_.get(), options.adapter_store_sync,
                                                        adapter_metrics_.get());
  }
  PublishAdapterGauges();
  started_at_ = absl::Now();
  return absl::OkStatus();
}

absl::Status ServerCore::Restore(const ServerCoreOptions& options) {
  // Loads one adapter and waits for it, without recording it in the store.
  auto load_now = [this](const std::string& id, adapters::AdapterSource source, bool pin,
                         std::string stamp = "") {
    absl::Notification loaded;
    absl::Status result;
    absl::Status st = registry_->StartLoad(
        id, std::move(source), false,
        [&](absl::StatusOr<adapters::AdapterInfo> r) {
          result = r.status();
          loaded.Notify();
        },
        /*persist=*/false, pin, std::move(stamp));
    if (st.ok()) loaded.WaitForNotification();
    return st.ok() ? result : st;
  };
  if (store_ != nullptr && store_->shared()) {
    // A shared store's entries load when a request names them; only the
    // pinned ones load now. Only their files are read and checked.
    int pinned = 0;
    for (const adapters::ManifestEntry& m : store_->Manifests()) {
      if (!m.pinned) continue;
      absl::StatusOr<adapters::StoredAdapter> entry = store_->Find(m.id);
      absl::Status st = entry.ok() ? load_now(m.id, std::move(entry->source), true, entry->stamp) : entry.status();
      if (st.ok()) {
        ++pinned;
      } else {
        LOG(WARNING) << "adapter store: pinned " << m.id << " was not restored: " << st;
      }
    }
    LOG(INFO) << "adapter store " << store_->dir() << " (shared): " << pinned
              << " pinned entries loaded; the others load when a request names them";
  } else if (store_ != nullptr) {
    const absl::Time start = absl::Now();
    adapters::StoreScan scan = store_->Scan();
    for (const absl::Status& skipped : scan.skipped) LOG(WARNING) << "skipped: " << skipped.message();
    int restored = 0;
    for (auto& entry : scan.adapters) {
      if (absl::Status st = load_now(entry.id, std::move(entry.source), entry.pinned, entry.stamp); st.ok()) {
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
      options.demo_trained
          ? absl::StatusOr<std::vector<std::pair<std::string, std::string>>>(trained_demo_adapters_)
          : adapters::EnsureDemoAdapters(options.cache_dir, model_config());
  if (!demo_adapters.ok()) return demo_adapters.status();
  for (const auto& [id, dir] : *demo_adapters) {
    if (registry_->Get(id).ok()) continue;  // restored from the store
    if (absl::Status st = load_now(id, adapters::PathSource{dir}, false); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<engine::RequestHandle>> ServerCore::Generate(const std::string& adapter_id,
                                                                           GenerateRequest request,
                                                                           std::shared_ptr<GenerateSink> sink) {
  const bool tokenized = request.engine.prompt.empty();
  if (absl::Status st = prompts_->Build(request); !st.ok()) return st;
  if (request.max_new_tokens_to_context) {
    int64_t room = model_config().max_position_embeddings - static_cast<int64_t>(request.engine.prompt.size());
    if (options_.engine.max_new_tokens > 0) room = std::min(room, options_.engine.max_new_tokens);
    // A prompt that leaves no room is reported by the checks below.
    request.engine.sampling.max_new_tokens = std::max<int64_t>(room, 1);
  }
  if (tokenized) {
    const char* what = request.prompt_text.has_value() ? "prompt_text" : "chat";
    const int64_t n = static_cast<int64_t>(request.engine.prompt.size());
    const int64_t limit = options_.engine.max_prompt_tokens;
    if (limit > 0 && n > limit) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is ", n, " tokens after tokenization; the limit (--max_prompt_tokens) is ", limit));
    }
    const int64_t context = model_config().max_position_embeddings;
    if (n + request.engine.sampling.max_new_tokens > context) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is ", n, " tokens after tokenization; with sampling.max_new_tokens (",
                                                     request.engine.sampling.max_new_tokens, ") that exceeds the context length ", context));
    }
  }
  std::unique_ptr<text::StopStringMatcher> stops;
  if (!request.stop.empty()) {
    if (prompts_->tokenizer() == nullptr) {
      return absl::FailedPreconditionError("sampling.stop needs a tokenizer, and the checkpoint has none");
    }
    absl::StatusOr<std::unique_ptr<text::StopStringMatcher>> m = text::StopStringMatcher::Create(
        request.stop, {options_.max_stop_strings, options_.max_stop_string_bytes}, request.include_stop_string);
    if (!m.ok()) return absl::InvalidArgumentError(absl::StrCat("sampling.stop: ", m.status().message()));
    stops = *std::move(m);
  }
  std::shared_ptr<const adapters::Adapter> adapter;
  if (!request.adapters.empty()) {
    if (!adapter_id.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("adapter_id ('", adapter_id,
                                                     "') and adapters are mutually exclusive: name one adapter, "
                                                     "or compose several in adapters over the base model"));
    }
    absl::StatusOr<LeasedComposition> composed =
        LeaseComposition([&](const std::string& id) { return Lookup(id, request.engine.deadline); },
                         request.adapters, options_.max_adapters_per_request);
    if (!composed.ok()) return composed.status();
    request.engine.adapter = std::move(composed->lease);
    adapter = std::move(composed->first);
  } else if (!adapter_id.empty()) {
    absl::StatusOr<std::shared_ptr<const adapters::Adapter>> a = Lookup(adapter_id, request.engine.deadline);
    if (!a.ok()) return a.status();
    adapter = *std::move(a);
    if (adapter->summary().classifier()) {
      return absl::FailedPreconditionError(absl::StrCat("adapter '", adapter_id,
                                                        "' is a sequence-classification adapter (task_type "
                                                        "SEQ_CLS); use Classify, not Generate"));
    }
    request.engine.adapter = adapter->Lease();  // brings it to the device tier if it is not there
  }
  auto output = std::make_shared<RequestOutput>(std::move(sink), prompts_->tokenizer(), request.skip_special_tokens,
                                                std::move(stops), std::move(request.stop), std::move(adapter),
                                                adapter_metrics_.get());
  return engine_->Submit(std::move(request.engine), std::move(output));
}

absl::StatusOr<std::shared_ptr<engine::RequestHandle>> ServerCore::Classify(const std::string& adapter_id,
                                                                           ClassifyRequest request,
                                                                           std::shared_ptr<ClassifySink> sink) {
  engine::GenerationRequest r;
  r.id = request.id;
  r.kind = engine::RequestKind::kClassify;
  r.deadline = request.deadline;
  if (request.prompt_text.has_value() == !request.prompt_token_ids.empty()) {
    return absl::InvalidArgumentError("give exactly one of prompt_token_ids and prompt_text");
  }
  r.prompt = std::move(request.prompt_token_ids);
  if (request.prompt_text.has_value()) {
    absl::StatusOr<std::vector<int32_t>> ids = prompts_->Tokenize(request.prompt_text, std::nullopt,
                                                                  request.add_special_tokens);
    if (!ids.ok()) return ids.status();
    if (ids->empty()) return absl::InvalidArgumentError("prompt_text is empty after tokenization");
    r.prompt.assign(ids->begin(), ids->end());
  }
  if (absl::Status st = engine_->Validate(r); !st.ok()) return st;  // the whole prompt
  if (adapter_id.empty()) {
    return absl::FailedPreconditionError("the base model is a causal LM with no classification head; Classify "
                                         "needs adapter_id to name a sequence-classification (SEQ_CLS) adapter");
  }
  absl::StatusOr<std::shared_ptr<const adapters::Adapter>> adapter = Lookup(adapter_id, r.deadline);
  if (!adapter.ok()) return adapter.status();
  const adapters::AdapterSummary& summary = (*adapter)->summary();
  if (!summary.classifier()) {
    return absl::FailedPreconditionError(absl::StrCat("adapter '", adapter_id, "' is a causal-LM adapter (task_type ",
                                                      summary.task_type, ", type ", summary.type,
                                                      "); Classify needs a sequence-classification adapter "
                                                      "(task_type SEQ_CLS)"));
  }
  // transformers pools the last token that is not padding: the highest
  // index whose token differs from pad_token_id (0 when all are padding).
  // Attention is causal, so the tokens after it cannot change its state.
  const int64_t pad = summary.pad_token_id >= 0 ? summary.pad_token_id : model_config().pad_token_id;
  ClassifyResult result;
  result.prompt_tokens = static_cast<int64_t>(r.prompt.size());
  result.pooled_index = result.prompt_tokens - 1;
  if (pad >= 0) {
    while (result.pooled_index > 0 && r.prompt[result.pooled_index] == pad) --result.pooled_index;
  }
  r.prompt.resize(static_cast<size_t>(result.pooled_index + 1));
  r.adapter = (*adapter)->Lease();
  auto output = std::make_shared<ClassifyOutput>(std::move(sink), std::move(result), *adapter, adapter_metrics_.get());
  return engine_->Submit(std::move(r), std::move(output));
}

absl::StatusOr<std::vector<int32_t>> ServerCore::Tokenize(const std::optional<std::string>& text,
                                                          const std::optional<ChatPrompt>& chat,
                                                          bool add_special_tokens) const {
  return prompts_->Tokenize(text, chat, add_special_tokens);
}

absl::StatusOr<std::string> ServerCore::Detokenize(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  return prompts_->Detokenize(ids, skip_special_tokens);
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

absl::StatusOr<adapters::AdapterInfo> ServerCore::GetAdapter(const std::string& id) {
  absl::StatusOr<adapters::AdapterInfo> info = registry_->Get(id);
  if (!absl::IsNotFound(info.status()) || store_ == nullptr || !store_->shared()) return info;
  absl::StatusOr<std::shared_ptr<const adapters::Adapter>> adapter = Lookup(id, absl::InfiniteFuture());
  if (!adapter.ok()) return adapter.status();
  PublishAdapterGauges();
  return (*adapter)->info();
}

absl::StatusOr<std::shared_ptr<const adapters::Adapter>> ServerCore::Lookup(const std::string& id,
                                                                           absl::Time deadline) {
  absl::StatusOr<std::shared_ptr<const adapters::Adapter>> held = registry_->Lookup(id);
  if (held.ok() || store_ == nullptr || !store_->shared()) return held;
  absl::StatusOr<std::shared_ptr<const adapters::Adapter>> loaded =
      registry_->LookupOrLoad(id, std::min(deadline, absl::Now() + options_.store_load_timeout));
  PublishAdapterGauges();
  return loaded;
}

void ServerCore::BeginShutdown(absl::Duration grace) { engine_->BeginShutdown(grace); }

bool ServerCore::AwaitStopped(absl::Time deadline) { return engine_->AwaitStopped(deadline); }

bool ServerCore::serving() const { return engine_->accepting(); }

}  // namespace adapterd::core
