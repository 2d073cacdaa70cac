// The server's core: the one place transports call into.
#ifndef ADAPTERD_SERVER_CORE_SERVER_CORE_H_
#define ADAPTERD_SERVER_CORE_SERVER_CORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "adapters/adapter_registry.h"
#include "adapters/adapter_source.h"
#include "adapters/adapter_store.h"
#include "adapters/store_sync.h"
#include "adapters/path_policy.h"
#include "prometheus/registry.h"
#include "server/core/classify_request.h"
#include "server/core/generate_request.h"
#include "server/core/prompt_builder.h"
#include "server/engine/engine.h"
#include "server/metrics/adapter_labels.h"
#include "server/metrics/adapter_metrics.h"
#include "server/metrics/engine_metrics.h"
#include "server/model/llama_model.h"

namespace adapterd::core {

struct ServerCoreOptions {
  // The Hugging Face checkpoint to serve; empty serves the demo model,
  // generated under `cache_dir` on first use, with its demo adapters when
  // `demo_adapters`.
  std::string model_dir;
  std::string cache_dir;
  // Bytes the base's weights may take in `model.dtype` on `model.device`;
  // Create() fails before loading a checkpoint whose config needs more.
  // 0: no budget.
  int64_t max_weight_bytes = 0;
  bool demo_adapters = true;
  // The demo model served: the one trained at first start on the project's
  // documentation, with a tokenizer and chat template (EnsureTrainedDemo;
  // about half a minute the first time), or, when false, the random one
  // without a tokenizer (model::EnsureDemoCheckpoint; a second), as tests
  // that only need some model use.
  bool demo_trained = true;
  // The base model's name for clients that select models by name (the
  // OpenAI API's `model`) and for metric labels; empty: the checkpoint
  // directory's basename.
  std::string served_model_name;
  model::ModelOptions model;
  engine::EngineOptions engine;
  adapters::AdapterCacheOptions cache;
  // Where loaded adapters are recorded and restored from at start-up;
  // empty keeps adapters in memory only.
  std::string adapter_store;
  // > 0: several servers share `adapter_store`. Each write is then locked
  // across processes; an adapter this server does not hold is loaded from
  // the store when a request names it (not at start-up, pinned ones
  // excepted); and every this often the adapters held are checked against
  // the store, so that other servers' unloads and replaces apply here.
  absl::Duration adapter_store_sync = absl::ZeroDuration();
  // How long the first load of an adapter from a shared store may hold a
  // request up (at most the request's own deadline).
  absl::Duration store_load_timeout = absl::Seconds(60);
  // Directories that path loads may read; empty refuses path loads.
  std::vector<std::string> adapter_roots;
  // Adapter ids that get their own metric label.
  int metrics_max_adapter_labels = 100;
  // Stop strings one request may carry, and the longest one, in bytes.
  size_t max_stop_strings = 16;
  size_t max_stop_string_bytes = 256;
  // The most adapters one composed request may name (GenerateRequest::adapters).
  int max_adapters_per_request = 4;
};

// The result of an admin load: the adapter's info, or why it failed.
using LoadDone = std::function<void(absl::StatusOr<adapters::AdapterInfo>)>;

// ServerCore owns what serving needs: the base model and its engine, the
// adapter registry (with its residency cache and store) and the metrics of
// those layers. Transports translate their requests into calls on it and
// its results back, and do nothing else: it looks adapters up, takes their
// leases, submits to the engine and does the per-adapter accounting, and
// every admin operation goes through it.
//
// A ServerCore starts serving once Create() returns: the model is loaded,
// the store restored and the demo adapters (if any) loaded. Shutdown is a
// drain: BeginShutdown() refuses new requests with UNAVAILABLE while
// accepted ones finish within the grace period. Thread-safe. The metrics
// registry must outlive it.
class ServerCore {
 public:
  static absl::StatusOr<std::unique_ptr<ServerCore>> Create(ServerCoreOptions options,
                                                            prometheus::Registry& metrics);
  ~ServerCore();  // shuts the engine down with no grace

  // Runs `request` through `adapter_id` (empty: the base model): builds its
  // prompt (see PromptBuilder), looks the adapter up and leases it, and
  // submits. The sink hears the output on the engine thread. Errors, with
  // nothing submitted: INVALID_ARGUMENT and FAILED_PRECONDITION for the
  // prompt and the stop strings, NOT_FOUND for an unknown adapter (there is
  // no fallback to the base), FAILED_PRECONDITION for a
  // sequence-classification adapter (see Classify), UNAVAILABLE while it
  // first loads or the server drains, and the engine's INVALID_ARGUMENT and
  // RESOURCE_EXHAUSTED.
  //
  // With request.adapters (and no adapter_id: both is INVALID_ARGUMENT),
  // the rows add every named LoRA adapter's delta times its weight, over
  // the base model: the result of PEFT's add_weighted_adapter(...,
  // combination_type="cat"), without building or merging anything. See
  // LeaseComposition for its checks, all INVALID_ARGUMENT. The request is
  // counted under its first adapter.
  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> Generate(const std::string& adapter_id,
                                                                 GenerateRequest request,
                                                                 std::shared_ptr<GenerateSink> sink);
  // Classifies `request` with the sequence-classification adapter
  // `adapter_id`: tokenizes a text prompt as Generate does, pools the last
  // token that is not the adapter's pad token (its config.json's
  // pad_token_id, else the base's; with none, the last token), as
  // transformers' *ForSequenceClassification does, and submits the prompt up
  // to that token as a prefill-only row; the sink hears the labels' logits
  // and probabilities on the engine thread. Errors, with nothing submitted:
  // INVALID_ARGUMENT for the prompt; FAILED_PRECONDITION for the base model
  // or a causal-LM adapter (and for a text prompt without a tokenizer);
  // NOT_FOUND, UNAVAILABLE, RESOURCE_EXHAUSTED as for Generate.
  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> Classify(const std::string& adapter_id,
                                                                 ClassifyRequest request,
                                                                 std::shared_ptr<ClassifySink> sink);
  // The token ids of `text` or `chat`, exactly as Generate would see them.
  absl::StatusOr<std::vector<int32_t>> Tokenize(const std::optional<std::string>& text,
                                                const std::optional<ChatPrompt>& chat,
                                                bool add_special_tokens) const;
  absl::StatusOr<std::string> Detokenize(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  // Loads the adapter directory `path` (confined to the adapter roots) as
  // `id`. Errors before anything is queued are returned and also given to
  // `done`; otherwise `done` runs on the loader thread with the result.
  void LoadAdapter(std::string id, std::string path, bool replace, bool pin, LoadDone done);
  // Loads uploaded files as `id`, as LoadAdapter does.
  void UploadAdapter(std::string id, adapters::UploadSource files, bool replace, bool pin, LoadDone done);
  // See AdapterRegistry::Unload.
  absl::Status UnloadAdapter(const std::string& id, bool keep_on_disk);
  std::vector<adapters::AdapterInfo> ListAdapters() const;
  // With a shared store, an id this server does not hold is loaded from it.
  absl::StatusOr<adapters::AdapterInfo> GetAdapter(const std::string& id);

  // Starts the drain (see the class comment); idempotent.
  void BeginShutdown(absl::Duration grace);
  // Waits until every accepted request has ended, or until `deadline`.
  bool AwaitStopped(absl::Time deadline);
  // False once the drain has begun.
  bool serving() const;

  const model::ModelConfig& model_config() const { return engine_->model_config(); }
  // The checkpoint directory served (the demo's when none was given).
  const std::string& model_dir() const { return model_dir_; }
  // The base model's name (ServerCoreOptions::served_model_name).
  const std::string& served_model_name() const { return served_model_name_; }
  // When the core started serving.
  absl::Time started_at() const { return started_at_; }
  bool demo() const { return demo_; }
  const adapters::AdapterRegistry& registry() const { return *registry_; }
  const engine::Engine& engine() const { return *engine_; }
  const PromptBuilder& prompts() const { return *prompts_; }

 private:
  ServerCore() = default;
  absl::Status Start(ServerCoreOptions options, prometheus::Registry& metrics);
  // Loads every adapter the store recorded, and the demo adapters.
  absl::Status Restore(const ServerCoreOptions& options);
  void StartLoad(std::string id, adapters::AdapterSource source, bool replace, bool pin, LoadDone done);
  // The registry's LookupOrLoad with the store-load timeout and `deadline`.
  absl::StatusOr<std::shared_ptr<const adapters::Adapter>> Lookup(const std::string& id, absl::Time deadline);
  void RecordLoadResult(const absl::StatusOr<adapters::AdapterInfo>& result);
  void PublishAdapterGauges();

  std::string model_dir_;
  std::string served_model_name_;
  absl::Time started_at_;
  bool demo_ = false;
  // The trained demo's adapters ({id, directory}); empty otherwise.
  std::vector<std::pair<std::string, std::string>> trained_demo_adapters_;
  ServerCoreOptions options_;
  std::optional<adapters::PathPolicy> paths_;
  std::unique_ptr<PromptBuilder> prompts_;
  std::unique_ptr<metrics::AdapterLabels> labels_;
  std::unique_ptr<metrics::EngineMetrics> engine_metrics_;
  std::unique_ptr<metrics::AdapterMetrics> adapter_metrics_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<adapters::AdapterStore> store_;
  std::unique_ptr<adapters::AdapterRegistry> registry_;
  std::unique_ptr<adapters::StoreSync> store_sync_;  // declared last: destroyed first
};

}  // namespace adapterd::core

#endif  // ADAPTERD_SERVER_CORE_SERVER_CORE_H_
