// adapterd: flags -> options -> ServerCore -> transports -> wait for a signal -> drain.
#include <signal.h>
#include <unistd.h>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/log/globals.h"
#include "absl/log/initialize.h"
#include "absl/log/log.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "prometheus/registry.h"
#include "server/common/compute_threads.h"
#include "server/common/heap_retention.h"
#include "server/core/server_core.h"
#include "server/http/http_server.h"
#include "server/http/metrics_service.h"
#include "server/http/openai_service.h"
#include "server/metrics/http_metrics.h"
#include "server/metrics/rpc_metrics.h"
#include "server/rpc/admin_service.h"
#include "server/auth/auth_settings.h"
#include "server/auth/call_authenticator.h"
#include "server/rpc/grpc_server.h"
#include "server/rpc/inference_service.h"

ABSL_FLAG(std::string, model, "",
          "Hugging Face checkpoint directory (config.json + safetensors). Empty serves the "
          "embedded demo model, generated under --cache_dir on first use.");
ABSL_FLAG(std::string, cache_dir, "",
          "Cache directory for the demo model. Empty: $ADAPTERD_CACHE_DIR, else "
          "$XDG_CACHE_HOME/adapterd, else ~/.cache/adapterd.");
ABSL_FLAG(bool, demo_adapters, true,
          "With the demo model (no --model), also load its demo LoRA adapters");
ABSL_FLAG(bool, demo_trained, true,
          "With the demo model (no --model), serve the one trained on the project's documentation (a "
          "tokenizer, weights and adapters, trained once under --cache_dir in about half a minute); false serves "
          "random weights without a tokenizer, generated in a second");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC listen address (host:port; port 0 = any)");
ABSL_FLAG(std::string, admin_listen, "",
          "Admin API listen address; empty serves Admin on --listen, which must then be a loopback "
          "address");
ABSL_FLAG(std::string, http_listen, "",
          "OpenAI-compatible HTTP API listen address (host:port; port 0 = any); empty disables it");
ABSL_FLAG(std::string, served_model_name, "",
          "The base model's name in the HTTP API's `model` field and metric labels; empty: the checkpoint "
          "directory's name");
ABSL_FLAG(int, http_threads, 2, "I/O threads of the HTTP listener, shared by all its connections");
ABSL_FLAG(int64_t, http_max_body_bytes, int64_t{4} << 20, "Largest HTTP request body accepted (413 beyond)");
ABSL_FLAG(int64_t, http_max_pending_bytes, int64_t{1} << 20,
          "Output a streamed HTTP response may hold back for a client that reads slowly before its request is "
          "cancelled and its connection closed");
ABSL_FLAG(double, http_write_timeout_seconds, 30,
          "How long one HTTP write may wait for the client to read before the connection is closed (and its "
          "request cancelled)");
ABSL_FLAG(double, http_idle_timeout_seconds, 60,
          "How long an HTTP request may take to arrive, and a kept-alive connection may sit idle");
ABSL_FLAG(int64_t, http_max_connections, 10000, "Open HTTP connections beyond which new ones are closed at once");
ABSL_FLAG(int, http_send_buffer_bytes, 0,
          "SO_SNDBUF of each HTTP connection: bounds what the kernel holds for a client that does not read "
          "(0 = the kernel's autotuning)");
ABSL_FLAG(bool, plaintext, false,
          "Serve gRPC and HTTP without TLS. Required, as an explicit choice, when no --tls_cert_file is set");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM certificate chain for TLS on the gRPC and HTTP listeners");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key for --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA bundle: clients may present certificates signed by it (mutual TLS); their names can "
          "grant roles through --admin_client_names and --inference_client_names");
ABSL_FLAG(std::string, admin_auth, "token",
          "Admin API authentication: 'token' (a bearer token or an admin client certificate is "
          "required) or 'none' (anyone who reaches the Admin listener may call it)");
ABSL_FLAG(std::string, admin_token_file, "",
          "File holding the Admin API bearer token; empty reads $ADAPTERD_ADMIN_TOKEN");
ABSL_FLAG(std::string, inference_token_file, "",
          "File holding the Inference API bearer token; empty reads $ADAPTERD_INFERENCE_TOKEN. With "
          "neither, inference calls need no credential");
ABSL_FLAG(std::vector<std::string>, admin_client_names, {},
          "Client-certificate names (CN or SAN) that hold the admin role (needs --tls_client_ca_file)");
ABSL_FLAG(std::vector<std::string>, inference_client_names, {},
          "Client-certificate names (CN or SAN) that hold the inference role");
ABSL_FLAG(std::vector<std::string>, adapter_roots, {},
          "Directories that Admin path loads may read (comma-separated); empty disables path loads");
ABSL_FLAG(std::string, adapter_store, "",
          "Directory where loaded adapters are recorded (uploads copied, path loads by path) and "
          "from which they are loaded again at start-up; empty keeps adapters in memory only");
ABSL_FLAG(double, adapter_store_sync_seconds, 0,
          "> 0: several replicas share --adapter_store. Adapters another replica wrote load on the first "
          "request that names them, and other replicas' unloads and replaces apply here within this many "
          "seconds (each entry's version stamp is checked on this timer and on every miss)");
ABSL_FLAG(int64_t, adapter_device_bytes, 0,
          "Byte budget for adapter weights on the device tier (built, ready to run); least recently "
          "used idle adapters are evicted past it. 0 = no limit");
ABSL_FLAG(int64_t, adapter_slots, 0,
          "> 0: preallocate this many slots on --device for resident adapters' LoRA weights, each holding "
          "one adapter of rank up to --adapter_slot_rank at every layer and projection; a load copies the "
          "adapter into a slot and frees its own copy, so resident adapters hold no allocations of their "
          "own; adapters that do not fit a slot, or find none free, keep their own tensors. 0 = no pool");
ABSL_FLAG(int64_t, adapter_slot_rank, 16, "Highest LoRA rank a slot of --adapter_slots holds");
ABSL_FLAG(int64_t, adapter_host_bytes, 0,
          "Byte budget for adapter files kept in host memory (the tier between device and disk); "
          "0 = no limit");
ABSL_FLAG(int, adapter_loader_nice, 5,
          "Nice value (0-19) of the thread that brings adapters in from host memory or disk: "
          "higher leaves more CPU to the running batch, lower brings cold adapters in sooner");
ABSL_FLAG(double, load_join_wait, 0.25,
          "How long a step may wait for the adapter of a newly arrived request that is being brought in, as a "
          "fraction (0-1) of the previous step's time, so that the request joins this step instead of the next; "
          "at most once per request, 0 never waits");
ABSL_FLAG(int64_t, max_adapters_per_batch, 0,
          "Most distinct adapters in one running batch (0 = no limit)");
ABSL_FLAG(int, max_adapters_per_request, 4,
          "Most LoRA adapters one composed request may name (the request's `adapters`, each with a weight)");
ABSL_FLAG(int64_t, max_prompt_tokens, 0, "Longest prompt accepted, in tokens (0 = the context length)");
ABSL_FLAG(int64_t, max_new_tokens, 0, "Largest sampling.max_new_tokens accepted (0 = the context length)");
ABSL_FLAG(int64_t, max_stop_token_ids, 64, "Most sampling.stop_token_ids in one request");
ABSL_FLAG(int64_t, max_upload_mb, 1024, "Largest adapter upload (all files together), in MiB");
ABSL_FLAG(int, metrics_max_adapter_labels, 100,
          "Adapter ids that get their own metric label; the rest share adapter=\"other\"");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics listen address, plaintext HTTP (host:port; port 0 = any; empty disables)");
ABSL_FLAG(int, threads, 0, "Compute threads for the model (0 = number of cores)");
ABSL_FLAG(int64_t, keep_freed_mb, 1024,
          "Memory the steps free that malloc keeps for the next steps instead of returning it to the kernel, in "
          "MiB at the top of each heap (0 = the C library's default)");
ABSL_FLAG(std::string, device, "cpu",
          "Where the model, its KV cache and the adapters' device tier live: cpu, or cuda / cuda:N (needs a "
          "LibTorch built with CUDA)");
ABSL_FLAG(std::string, dtype, "",
          "Weight and activation dtype: float32, bfloat16, float16 (default: float32 on cpu, bfloat16 on cuda)");
ABSL_FLAG(std::string, lora_dtype, "auto",
          "dtype LoRA and DoRA A and B matrices are kept in: auto (as saved on a float32 cpu model, half "
          "precision read widened; the model's dtype elsewhere), or bfloat16 / float16 on a float32 cpu model, "
          "which rounds float32 adapters as if saved so: half the bytes held and read per step");
ABSL_FLAG(int, skinny_gemm_rows, -1,
          "Base products of at most this many rows (decode steps of a few streams) read each weight row once "
          "through adapterd's own kernel on a float32 or bfloat16 cpu model; 0 = LibTorch for every product, "
          "-1 = by dtype and CPU (float32 16 with --prepack_weights, 32 without; bfloat16 8 with AMX, else 2 "
          "where --prepack_weights packs the weights and 32 where nothing is packed)");
ABSL_FLAG(bool, prepack_weights, true,
          "On a float32 cpu model, or a bfloat16 one on a CPU with AVX512-BF16, keep a second copy of the base's "
          "projection and LM head weights in oneDNN's blocked layout, made at load, so that batched products skip "
          "the packing LibTorch's GEMM does on every call (the size of those weights again in memory)");
ABSL_FLAG(std::string, delta_backend, "auto",
          "How adapter deltas are computed: auto (the CUDA kernels on a GPU when the build has them, else aten), "
          "aten (LibTorch products; row kernels on the CPU), sgmv (the segmented kernels; on the CPU their exact, "
          "slow host version)");
ABSL_FLAG(std::string, cuda_graphs, "auto",
          "Decode steps replayed from CUDA graphs captured per batch-size bucket: auto (on a CUDA device when "
          "the build has them), on (start-up fails where they cannot be used), off (every step launched as it "
          "comes)");
ABSL_FLAG(int64_t, max_weight_bytes, 0,
          "Byte budget for the base model's weights on --device: start-up fails, before loading, for a "
          "checkpoint that needs more (0 = no budget)");
ABSL_FLAG(int64_t, max_batch_size, 64, "Sequences in one forward step");
ABSL_FLAG(int64_t, max_tokens_per_step, 512, "Token budget of one forward step (chunked prefill)");
ABSL_FLAG(int64_t, max_waiting, 1024, "Queued requests before new ones get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, kv_block_size, 16, "Tokens per KV cache block");
ABSL_FLAG(int64_t, kv_cache_mb, 256, "KV cache budget in MiB (see --kv_cache_bytes)");
ABSL_FLAG(int64_t, kv_cache_bytes, 0, "KV cache budget in bytes; 0 takes --kv_cache_mb");
ABSL_FLAG(bool, prefix_caching, false,
          "Keep computed KV blocks, keyed by adapter and tokens, and reuse them for prompts that start the same way");
ABSL_FLAG(int, max_message_mb, 4, "Largest gRPC message accepted or sent, in MiB");
ABSL_FLAG(double, shutdown_grace_seconds, 30,
          "On SIGTERM/SIGINT, how long in-flight requests may run before they are cancelled");
ABSL_FLAG(std::string, log_level, "info", "Minimum log level: info, warning, error");
ABSL_FLAG(std::string, ready_file, "",
          "If set, write the bound addresses as JSON to this file once serving");

namespace {

std::string DefaultCacheDir() {
  if (const char* d = std::getenv("ADAPTERD_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return absl::StrCat(d, "/adapterd");
  if (const char* d = std::getenv("HOME"); d && *d) return absl::StrCat(d, "/.cache/adapterd");
  return "/tmp/adapterd-cache";
}

bool SetLogLevel(const std::string& level) {
  absl::LogSeverityAtLeast s;
  if (level == "info") {
    s = absl::LogSeverityAtLeast::kInfo;
  } else if (level == "warning") {
    s = absl::LogSeverityAtLeast::kWarning;
  } else if (level == "error") {
    s = absl::LogSeverityAtLeast::kError;
  } else {
    return false;
  }
  absl::SetMinLogLevel(s);
  absl::SetStderrThreshold(s);
  return true;
}

// The authentication flags, for the auth layer to check and apply.
absl::StatusOr<std::unique_ptr<adapterd::auth::CallAuthenticator>> MakeAuthenticator() {
  adapterd::auth::AuthSettings s;
  s.mode = absl::GetFlag(FLAGS_admin_auth);
  s.admin_token_file = absl::GetFlag(FLAGS_admin_token_file);
  s.inference_token_file = absl::GetFlag(FLAGS_inference_token_file);
  s.admin_client_names = absl::GetFlag(FLAGS_admin_client_names);
  s.inference_client_names = absl::GetFlag(FLAGS_inference_client_names);
  s.tls_client_ca = !absl::GetFlag(FLAGS_tls_client_ca_file).empty();
  return adapterd::auth::MakeCallAuthenticator(s);
}

// --device: "cpu", "cuda" or "cuda:N", on a LibTorch that has that device.
absl::StatusOr<c10::Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return c10::Device(c10::DeviceType::CPU);
  int index = 0;
  const bool cuda = name == "cuda" || (absl::StartsWith(name, "cuda:") &&
                                       absl::SimpleAtoi(name.substr(5), &index) && index >= 0 && index < 64);
  if (!cuda) return absl::InvalidArgumentError(absl::StrCat("--device must be cpu, cuda or cuda:N, not \"", name, "\""));
  if (!at::hasCUDA()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device=", name, ": this build's LibTorch has no CUDA; serve with --device=cpu, or build adapterd "
        "against a LibTorch built with CUDA"));
  }
  const int64_t devices = at::detail::getCUDAHooks().getNumGPUs();
  if (index >= devices) {
    return absl::FailedPreconditionError(
        absl::StrCat("--device=", name, ": this machine has ", devices, " CUDA device(s)"));
  }
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
}

// "float32", "bfloat16" or "float16"; nullopt for anything else.
std::optional<c10::ScalarType> ParseDtype(const std::string& name) {
  if (name == "float32") return c10::ScalarType::Float;
  if (name == "bfloat16") return c10::ScalarType::BFloat16;
  if (name == "float16") return c10::ScalarType::Half;
  return std::nullopt;
}

// The model's options from the flags; errors name the flag.
absl::Status ModelFlags(adapterd::model::ModelOptions& m) {
  absl::StatusOr<c10::Device> device = ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return device.status();
  m.device = *device;
  std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype.empty()) dtype = device->is_cuda() ? "bfloat16" : "float32";
  std::optional<c10::ScalarType> parsed = ParseDtype(dtype);
  if (!parsed) return absl::InvalidArgumentError("--dtype must be float32, bfloat16 or float16");
  m.dtype = *parsed;
  const std::string lora_dtype = absl::GetFlag(FLAGS_lora_dtype);
  parsed = lora_dtype == "auto" ? std::optional(c10::ScalarType::Undefined) : ParseDtype(lora_dtype);
  if (!parsed) return absl::InvalidArgumentError("--lora_dtype must be auto, float32, bfloat16 or float16");
  m.lora_dtype = *parsed;
  if (absl::GetFlag(FLAGS_skinny_gemm_rows) < -1) {
    return absl::InvalidArgumentError("--skinny_gemm_rows must be -1 (by dtype and CPU), 0 (off) or a row count");
  }
  m.skinny_rows = absl::GetFlag(FLAGS_skinny_gemm_rows);
  m.prepack_weights = absl::GetFlag(FLAGS_prepack_weights);
  const std::string backend = absl::GetFlag(FLAGS_delta_backend);
  if (backend == "auto") {
    m.delta_backend = adapterd::model::DeltaBackendKind::kAuto;
  } else if (backend == "aten") {
    m.delta_backend = adapterd::model::DeltaBackendKind::kAten;
  } else if (backend == "sgmv") {
    m.delta_backend = adapterd::model::DeltaBackendKind::kSgmv;
  } else {
    return absl::InvalidArgumentError("--delta_backend must be auto, aten or sgmv");
  }
  const std::string graphs = absl::GetFlag(FLAGS_cuda_graphs);
  if (graphs == "auto") {
    m.decode_steps = adapterd::model::DecodeSteps::kAuto;
  } else if (graphs == "on") {
    m.decode_steps = adapterd::model::DecodeSteps::kGraphs;
  } else if (graphs == "off") {
    m.decode_steps = adapterd::model::DecodeSteps::kEager;
  } else {
    return absl::InvalidArgumentError("--cuda_graphs must be auto, on or off");
  }
  m.adapter_slots = absl::GetFlag(FLAGS_adapter_slots);
  m.adapter_slot_rank = absl::GetFlag(FLAGS_adapter_slot_rank);
  if (m.adapter_slots < 0) return absl::InvalidArgumentError("--adapter_slots must be >= 0");
  if (m.adapter_slot_rank < 1) return absl::InvalidArgumentError("--adapter_slot_rank must be >= 1");
  return absl::OkStatus();
}

// The core's options from the flags; errors name the flag.
absl::StatusOr<adapterd::core::ServerCoreOptions> CoreOptions() {
  adapterd::core::ServerCoreOptions o;
  if (absl::Status s = ModelFlags(o.model); !s.ok()) return s;
  o.model_dir = absl::GetFlag(FLAGS_model);
  o.cache_dir = absl::GetFlag(FLAGS_cache_dir);
  if (o.cache_dir.empty()) o.cache_dir = DefaultCacheDir();
  o.demo_adapters = absl::GetFlag(FLAGS_demo_adapters);
  o.demo_trained = absl::GetFlag(FLAGS_demo_trained);
  adapterd::engine::EngineOptions& e = o.engine;
  e.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  e.max_tokens_per_step = absl::GetFlag(FLAGS_max_tokens_per_step);
  e.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  e.max_adapters_per_batch = absl::GetFlag(FLAGS_max_adapters_per_batch);
  e.load_join_wait = absl::GetFlag(FLAGS_load_join_wait);
  e.kv_block_size = absl::GetFlag(FLAGS_kv_block_size);
  const int64_t kv_bytes = absl::GetFlag(FLAGS_kv_cache_bytes), kv_mb = absl::GetFlag(FLAGS_kv_cache_mb);
  if (kv_bytes < 0 || kv_mb <= 0) {
    return absl::InvalidArgumentError("--kv_cache_bytes must be >= 0 and --kv_cache_mb > 0");
  }
  e.kv_cache_bytes = kv_bytes > 0 ? kv_bytes : kv_mb << 20;
  o.max_weight_bytes = absl::GetFlag(FLAGS_max_weight_bytes);
  if (o.max_weight_bytes < 0) return absl::InvalidArgumentError("--max_weight_bytes must be >= 0");
  e.prefix_caching = absl::GetFlag(FLAGS_prefix_caching);
  e.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  e.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  e.max_stop_token_ids = absl::GetFlag(FLAGS_max_stop_token_ids);
  o.cache.device_bytes = absl::GetFlag(FLAGS_adapter_device_bytes);
  o.cache.host_bytes = absl::GetFlag(FLAGS_adapter_host_bytes);
  o.cache.loader_nice = absl::GetFlag(FLAGS_adapter_loader_nice);
  o.adapter_store = absl::GetFlag(FLAGS_adapter_store);
  const double sync = absl::GetFlag(FLAGS_adapter_store_sync_seconds);
  if (!(sync >= 0 && sync <= 86400)) {
    return absl::InvalidArgumentError("--adapter_store_sync_seconds must be between 0 and 86400");
  }
  if (sync > 0 && absl::GetFlag(FLAGS_adapter_store).empty()) {
    return absl::InvalidArgumentError("--adapter_store_sync_seconds needs --adapter_store (the shared directory)");
  }
  o.adapter_store_sync = absl::Seconds(sync);
  o.adapter_roots = absl::GetFlag(FLAGS_adapter_roots);
  o.max_adapters_per_request = absl::GetFlag(FLAGS_max_adapters_per_request);
  o.metrics_max_adapter_labels = absl::GetFlag(FLAGS_metrics_max_adapter_labels);
  o.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  return o;
}

// The HTTP listeners' options from the flags (TLS as for gRPC).
adapterd::http::HttpServerOptions HttpOptions(const std::string& address, adapterd::metrics::HttpMetrics* metrics) {
  adapterd::http::HttpServerOptions o;
  o.listen_address = address;
  o.threads = absl::GetFlag(FLAGS_http_threads);
  o.max_body_bytes = absl::GetFlag(FLAGS_http_max_body_bytes);
  o.idle_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_idle_timeout_seconds));
  o.write_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_write_timeout_seconds));
  o.max_connections = absl::GetFlag(FLAGS_http_max_connections);
  o.send_buffer_bytes = absl::GetFlag(FLAGS_http_send_buffer_bytes);
  o.plaintext = absl::GetFlag(FLAGS_plaintext);
  o.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  o.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  o.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  o.metrics = metrics;
  return o;
}

// Client commands to try, printed once the server is ready.
std::string TryHint(const std::string& addr, bool demo, bool trained, bool adapters) {
  if (demo && trained) {
    std::string hint = absl::StrCat("  try:     ./x ctl generate --addr=", addr,
                                    " --text=\"The adapter\" --max_new_tokens=32\n");
    if (adapters) {
      absl::StrAppend(&hint, "           ./x ctl generate --addr=", addr,
                      " --text=\"The adapter\" --max_new_tokens=32 --adapter=demo-qv-r4\n");
    }
    absl::StrAppend(&hint, "           ./x ctl chat --addr=", addr, "\n");
    return hint;
  }
  return absl::StrCat("  try:     ./x ctl generate --addr=", addr, " --prompt=1,2,3 --max_new_tokens=16",
                      demo && adapters ? " --adapter=demo-qv-r4" : "", "\n");
}

int Fail(const absl::Status& status) {
  LOG(ERROR) << status;
  std::cerr << "adapterd: " << status.message() << "\n";
  return 1;
}

// Starts the Prometheus endpoint (--metrics_listen); null when disabled.
absl::StatusOr<std::unique_ptr<adapterd::http::HttpServer>> StartMetrics(adapterd::http::MetricsService* service,
                                                                         adapterd::metrics::HttpMetrics* metrics) {
  const std::string addr = absl::GetFlag(FLAGS_metrics_listen);
  if (addr.empty()) return nullptr;
  adapterd::http::HttpServerOptions o = HttpOptions(addr, metrics);
  o.name = "metrics";
  o.threads = 1;
  o.plaintext = true;  // Prometheus scrapes, as before the HTTP API existed
  return adapterd::http::HttpServer::Start(o, service);
}

// Starts the OpenAI-compatible API (--http_listen); null when disabled.
absl::StatusOr<std::unique_ptr<adapterd::http::HttpServer>> StartOpenAiHttp(
    adapterd::http::OpenAiService* openai, const adapterd::auth::CallAuthenticator& auth,
    adapterd::metrics::HttpMetrics* metrics) {
  const std::string addr = absl::GetFlag(FLAGS_http_listen);
  if (addr.empty()) return nullptr;
  if (auth.admin_open() && !adapterd::rpc::IsLoopbackAddress(addr)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--http_listen=", addr, " is not a loopback address and --admin_auth=none would open its LoRA "
        "load/unload endpoints to anyone who reaches it: configure an admin token or client names"));
  }
  return adapterd::http::HttpServer::Start(HttpOptions(addr, metrics), openai);
}

// The gRPC listener's options from the flags; errors name the flag.
absl::StatusOr<adapterd::rpc::GrpcServerOptions> GrpcOptions() {
  adapterd::rpc::GrpcServerOptions o;
  o.listen_address = absl::GetFlag(FLAGS_listen);
  o.max_receive_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  o.max_send_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  o.plaintext = absl::GetFlag(FLAGS_plaintext);
  o.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  o.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  o.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  if (absl::GetFlag(FLAGS_admin_listen).empty() && !adapterd::rpc::IsLoopbackAddress(o.listen_address)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--listen=", o.listen_address,
        " is not a loopback address and the Admin API would share it: set --admin_listen (for "
        "example 127.0.0.1:50052)"));
  }
  return o;
}

struct Addresses {
  std::string grpc, admin, metrics, http;  // http empty when disabled
};

// Writes --ready_file (atomically) and logs and prints where the server listens.
void AnnounceReady(const Addresses& a, const adapterd::core::ServerCore& core) {
  if (const std::string f = absl::GetFlag(FLAGS_ready_file); !f.empty()) {
    const std::string tmp = f + ".tmp";
    std::ofstream(tmp) << absl::StrFormat(
                              R"({"grpc": "%s", "admin": "%s", "metrics": "%s", "http": "%s", "pid": %d})",
                              a.grpc, a.admin, a.metrics, a.http, getpid())
                       << "\n";
    std::rename(tmp.c_str(), f.c_str());
  }
  LOG(INFO) << "ready: grpc " << a.grpc << ", admin " << a.admin << ", metrics http://" << a.metrics << "/metrics"
            << (a.http.empty() ? "" : ", http " + a.http) << ", model \"" << core.served_model_name() << "\"";
  const std::string scheme = absl::GetFlag(FLAGS_plaintext) ? "http" : "https";
  std::cout << "adapterd ready\n  gRPC:    " << a.grpc << "\n  admin:   " << a.admin
            << (a.http.empty() ? ""
                               : "\n  HTTP:    " + scheme + "://" + a.http + "/v1 (model \"" +
                                     core.served_model_name() + "\")")
            << "\n  metrics: http://" << a.metrics << "/metrics\n"
            << TryHint(a.grpc, core.demo(), absl::GetFlag(FLAGS_demo_trained), absl::GetFlag(FLAGS_demo_adapters))
            << std::flush;
}

// After a signal. Drain first: the engine refuses new calls with
// UNAVAILABLE (retryable) and health says NOT_SERVING while accepted
// requests finish; HTTP mirrors it (new requests get 503, /health says 503,
// and responses ask clients to close their connections) while streams run
// on. Only then do the transports shut down, so that clients meet their own
// shutdown race (CANCELLED) only in the last moment, not for the whole
// grace. The admin, http and metrics servers may be null.
void ShutDown(adapterd::core::ServerCore* core, adapterd::rpc::GrpcServer* grpc, adapterd::rpc::GrpcServer* admin,
              adapterd::http::HttpServer* http, adapterd::http::HttpServer* metrics, absl::Duration grace) {
  const absl::Time deadline = absl::Now() + grace;
  core->BeginShutdown(grace);
  grpc->MarkNotServing();
  if (http != nullptr) http->BeginDrain();
  if (admin != nullptr) admin->Shutdown(absl::ZeroDuration());
  core->AwaitStopped(deadline + absl::Seconds(1));
  if (http != nullptr) http->Shutdown(std::max(deadline - absl::Now(), absl::Seconds(1)));
  grpc->Shutdown(std::max(deadline - absl::Now(), absl::Seconds(1)));
  if (metrics != nullptr) metrics->Shutdown(absl::ZeroDuration());
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves a Llama-family base model and its adapters over gRPC and an OpenAI-compatible HTTP API.\n"
      "Usage: adapterd [--model=DIR] [--listen=HOST:PORT] [--flagfile=FILE] ...\n"
      "A --flagfile holds one --flag=value per line and mirrors these flags.");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "server/main.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  absl::InitializeLog();
  if (!SetLogLevel(absl::GetFlag(FLAGS_log_level))) {
    std::cerr << "adapterd: --log_level must be info, warning or error\n";
    return 2;
  }

  // Signals are taken by one thread with sigwait; block them everywhere else.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const int threads = absl::GetFlag(FLAGS_threads) > 0
                          ? absl::GetFlag(FLAGS_threads)
                          : static_cast<int>(std::thread::hardware_concurrency());
  // One budget for every compute pool: ATen's (our kernels included) and OpenBLAS's.
  adapterd::SetComputeThreads(threads);
  if (absl::GetFlag(FLAGS_keep_freed_mb) < 0) {
    return Fail(absl::InvalidArgumentError("--keep_freed_mb must be at least 0"));
  }
  std::optional<adapterd::HeapRetention> heap;
  if (const int64_t mb = absl::GetFlag(FLAGS_keep_freed_mb); mb > 0) heap.emplace(static_cast<size_t>(mb) << 20);

  absl::StatusOr<adapterd::core::ServerCoreOptions> options = CoreOptions();
  if (!options.ok()) return Fail(options.status());
  auto registry = std::make_shared<prometheus::Registry>();
  adapterd::metrics::HttpMetrics http_metrics(*registry);
  adapterd::http::MetricsService metrics_service(registry.get(), &http_metrics);
  absl::StatusOr<std::unique_ptr<adapterd::http::HttpServer>> metrics_server =
      StartMetrics(&metrics_service, &http_metrics);
  if (!metrics_server.ok()) return Fail(metrics_server.status());
  const std::string metrics_address = *metrics_server != nullptr ? (*metrics_server)->address() : "disabled";
  absl::StatusOr<std::unique_ptr<adapterd::core::ServerCore>> core =
      adapterd::core::ServerCore::Create(*std::move(options), *registry);
  if (!core.ok()) return Fail(core.status());
  LOG(INFO) << threads << " compute threads";
  adapterd::metrics::RpcMetrics rpc_metrics(*registry);

  absl::StatusOr<std::unique_ptr<adapterd::auth::CallAuthenticator>> auth = MakeAuthenticator();
  if (!auth.ok()) return Fail(auth.status());
  adapterd::rpc::InferenceService inference(core->get(), &rpc_metrics, auth->get());
  adapterd::rpc::AdminOptions admin_options;
  admin_options.max_upload_bytes = absl::GetFlag(FLAGS_max_upload_mb) << 20;
  admin_options.auth = auth->get();
  adapterd::rpc::AdminService admin(core->get(), &rpc_metrics, admin_options);

  absl::StatusOr<adapterd::rpc::GrpcServerOptions> grpc_flags = GrpcOptions();
  if (!grpc_flags.ok()) return Fail(grpc_flags.status());
  adapterd::rpc::GrpcServerOptions& grpc_options = *grpc_flags;
  const std::string admin_listen = absl::GetFlag(FLAGS_admin_listen);
  std::vector<grpc::Service*> services = {&inference};
  grpc_options.health_services = {"adapterd.v1.Inference"};
  if (admin_listen.empty()) {
    services.push_back(&admin);
    grpc_options.health_services.push_back("adapterd.v1.Admin");
  }
  absl::StatusOr<std::unique_ptr<adapterd::rpc::GrpcServer>> server =
      adapterd::rpc::GrpcServer::Start(grpc_options, services);
  if (!server.ok()) return Fail(server.status());
  std::unique_ptr<adapterd::rpc::GrpcServer> admin_server;
  std::string admin_address = (*server)->address();
  if (!admin_listen.empty()) {
    adapterd::rpc::GrpcServerOptions admin_grpc = grpc_options;
    admin_grpc.listen_address = admin_listen;
    admin_grpc.health_services = {"adapterd.v1.Admin"};
    absl::StatusOr<std::unique_ptr<adapterd::rpc::GrpcServer>> a =
        adapterd::rpc::GrpcServer::Start(admin_grpc, {&admin});
    if (!a.ok()) return Fail(a.status());
    admin_server = *std::move(a);
    admin_address = admin_server->address();
  }

  adapterd::http::OpenAiServiceOptions openai_options;
  openai_options.auth = auth->get();
  openai_options.registry = registry.get();
  openai_options.metrics = &http_metrics;
  openai_options.max_pending_bytes = absl::GetFlag(FLAGS_http_max_pending_bytes);
  adapterd::http::OpenAiService openai(core->get(), openai_options);
  absl::StatusOr<std::unique_ptr<adapterd::http::HttpServer>> http_server =
      StartOpenAiHttp(&openai, **auth, &http_metrics);
  if (!http_server.ok()) return Fail(http_server.status());
  const std::string http_address = *http_server != nullptr ? (*http_server)->address() : "";

  AnnounceReady({(*server)->address(), admin_address, metrics_address, http_address}, **core);

  int sig = 0;
  sigwait(&signals, &sig);
  const absl::Duration grace = absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds));
  LOG(INFO) << "received signal " << sig << ": shutting down (grace "
            << absl::FormatDuration(grace) << ")";
  ShutDown(core->get(), server->get(), admin_server.get(), http_server->get(), metrics_server->get(), grace);
  core->reset();
  LOG(INFO) << "shut down cleanly";
  return 0;
}
