#include "server/http/openai_service.h"

#include <tuple>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/http/classification.h"
#include "server/http/generation.h"
#include "server/http/http_error.h"
#include "server/http/metrics_service.h"

namespace adapterd::http {
namespace {

using nlohmann::json;

constexpr std::string_view kModelsPrefix = "/v1/models/";

bool ValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

// A route: its path, method and metric label.
struct Route {
  std::string_view path;
  std::string_view method;
  const char* name;
};

constexpr Route kRoutes[] = {
    {"/v1/completions", "POST", "completions"},
    {"/v1/chat/completions", "POST", "chat_completions"},
    {"/v1/classify", "POST", "classify"},
    {"/v1/models", "GET", "models"},
    {"/v1/load_lora_adapter", "POST", "load_lora_adapter"},
    {"/v1/unload_lora_adapter", "POST", "unload_lora_adapter"},
    {"/health", "GET", "health"},
    {"/metrics", "GET", "metrics"},
};

const Route* FindRoute(std::string_view path) {
  if (path.starts_with(kModelsPrefix) && path.size() > kModelsPrefix.size()) return &kRoutes[3];
  for (const Route& r : kRoutes) {
    if (r.path == path) return &r;
  }
  return nullptr;
}

json ModelCard(const std::string& id, int64_t created, const std::string& base) {
  json card = {{"id", id}, {"object", "model"}, {"created", created}, {"owned_by", "adapterd"}, {"root", base}};
  card["parent"] = id == base ? json(nullptr) : json(base);
  return card;
}

HttpResponse Json(const json& j) {
  HttpResponse r;
  r.body = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

HttpResponse PlainText(std::string text) {
  HttpResponse r;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(text);
  return r;
}

}  // namespace

std::string ChooseRequestId(const HttpRequest& request) {
  const std::string_view given = request.Header("x-request-id");
  if (ValidRequestId(given)) return std::string(given);
  thread_local absl::BitGen gen;
  return absl::StrFormat("%016x", absl::Uniform<uint64_t>(gen));
}

OpenAiService::OpenAiService(core::ServerCore* core, OpenAiServiceOptions options)
    : core_(core), options_(std::move(options)) {}

void OpenAiService::Reply(const Exchange& x, const char* route, const std::string& request_id,
                          HttpResponse response) const {
  response.headers.emplace_back("x-request-id", request_id);
  if (options_.metrics != nullptr) options_.metrics->RecordRequest(route, response.status);
  x->Respond(std::move(response));
}

absl::Status OpenAiService::Authorize(const HttpRequest& request, auth::Role role) const {
  if (options_.auth == nullptr || !options_.auth->NeedsCredential(role)) return absl::OkStatus();
  auth::PresentedCredentials creds;
  for (const auto& [name, value] : request.headers) {
    if (name == "authorization") {
      auth::ParseAuthorization(value, creds);
      break;
    }
  }
  creds.client_names = request.client_names;
  return options_.auth->Authorize(creds, role);
}

void OpenAiService::Handle(std::shared_ptr<HttpExchange> exchange) {
  const HttpRequest& req = exchange->request();
  const std::string request_id = ChooseRequestId(req);
  const Route* route = FindRoute(req.path);
  if (route == nullptr) {
    return Reply(exchange, "other", request_id,
                 ErrorResponse(404, absl::StrCat("no route for ", req.method, " ", req.path.substr(0, 200))));
  }
  if (req.method != route->method) {
    HttpResponse r = ErrorResponse(405, absl::StrCat(req.path.substr(0, 200), " takes ", std::string(route->method)));
    r.headers.emplace_back("Allow", std::string(route->method));
    return Reply(exchange, route->name, request_id, std::move(r));
  }
  const std::string_view name = route->name;
  if (name == "health") return Health(exchange, request_id);
  if (name == "metrics") {
    if (options_.registry == nullptr) return Reply(exchange, "metrics", request_id, ErrorResponse(404, "no metrics"));
    return Reply(exchange, "metrics", request_id, MetricsResponse(*options_.registry));
  }
  const bool admin = name == "load_lora_adapter" || name == "unload_lora_adapter";
  if (absl::Status st = Authorize(req, admin ? auth::Role::kAdmin : auth::Role::kInference); !st.ok()) {
    return Reply(exchange, route->name, request_id, ErrorResponse(st));
  }
  if (name == "completions") return Completions(exchange, request_id, ApiKind::kCompletion);
  if (name == "chat_completions") return Completions(exchange, request_id, ApiKind::kChat);
  if (name == "classify") return Classify(exchange, request_id);
  if (name == "load_lora_adapter") return LoadLora(exchange, request_id);
  if (name == "unload_lora_adapter") return UnloadLora(exchange, request_id);
  if (req.path == "/v1/models") return ListModels(exchange, request_id);
  return GetModel(exchange, request_id, req.path.substr(kModelsPrefix.size()));
}

std::pair<std::string, std::string> OpenAiService::ResolveModel(const std::string& model) const {
  const std::string& base = core_->served_model_name();
  if (model.empty() || model == base) return {base, ""};
  return {model, model};
}

void OpenAiService::Completions(const Exchange& x, const std::string& request_id, ApiKind kind) {
  const char* route = kind == ApiKind::kChat ? "chat_completions" : "completions";
  absl::StatusOr<OpenAiRequest> request = kind == ApiKind::kChat ? ParseChatRequest(x->request().body, options_.limits)
                                                                 : ParseCompletionRequest(x->request().body, options_.limits);
  if (!request.ok()) return Reply(x, route, request_id, ErrorResponse(request.status()));
  GenerationContext ctx;
  ctx.core = core_;
  ctx.metrics = options_.metrics;
  std::tie(ctx.model, ctx.adapter_id) = ResolveModel(request->model);
  if (!ctx.adapter_id.empty() && !request->prompts.empty() && !request->prompts.front().adapters.empty()) {
    return Reply(x, route, request_id,
                 ErrorResponse(400, absl::StrCat("adapters composes LoRA adapters over the base model: model must "
                                                 "then name the base model ('", core_->served_model_name(),
                                                 "') or be omitted, not '", ctx.adapter_id.substr(0, 200), "'"),
                               "adapters"));
  }
  ctx.request_id = request_id;
  ctx.created = absl::ToUnixSeconds(absl::Now());
  ctx.max_pending_bytes = options_.max_pending_bytes;
  Generation::Run(std::move(ctx), *std::move(request), x);
}

void OpenAiService::Classify(const Exchange& x, const std::string& request_id) {
  absl::StatusOr<ClassifyApiRequest> request = ParseClassifyRequest(x->request().body, options_.limits);
  if (!request.ok()) return Reply(x, "classify", request_id, ErrorResponse(request.status()));
  ClassificationContext ctx;
  ctx.core = core_;
  ctx.metrics = options_.metrics;
  std::tie(ctx.model, ctx.adapter_id) = ResolveModel(request->model);
  ctx.request_id = request_id;
  ctx.created = absl::ToUnixSeconds(absl::Now());
  Classification::Run(std::move(ctx), *std::move(request), x);
}

void OpenAiService::ListModels(const Exchange& x, const std::string& request_id) {
  const std::string& base = core_->served_model_name();
  json data = json::array({ModelCard(base, absl::ToUnixSeconds(core_->started_at()), base)});
  for (const adapters::AdapterInfo& a : core_->ListAdapters()) {
    if (a.state != adapters::AdapterState::kReady || a.id == base) continue;
    data.push_back(ModelCard(a.id, absl::ToUnixSeconds(a.loaded_at), base));
  }
  Reply(x, "models", request_id, Json({{"object", "list"}, {"data", std::move(data)}}));
}

void OpenAiService::GetModel(const Exchange& x, const std::string& request_id, const std::string& model) {
  const std::string& base = core_->served_model_name();
  if (model == base) {
    return Reply(x, "models", request_id, Json(ModelCard(base, absl::ToUnixSeconds(core_->started_at()), base)));
  }
  absl::StatusOr<adapters::AdapterInfo> a = core_->GetAdapter(model);
  if (!a.ok() || a->state != adapters::AdapterState::kReady) {
    return Reply(x, "models", request_id,
                 ErrorResponse(404, absl::StrCat("The model '", model.substr(0, 200), "' does not exist"), "model"));
  }
  Reply(x, "models", request_id, Json(ModelCard(a->id, absl::ToUnixSeconds(a->loaded_at), base)));
}

void OpenAiService::LoadLora(const Exchange& x, const std::string& request_id) {
  absl::StatusOr<LoraLoadRequest> req = ParseLoadLoraRequest(x->request().body);
  if (!req.ok()) return Reply(x, "load_lora_adapter", request_id, ErrorResponse(req.status()));
  if (req->name == core_->served_model_name()) {
    return Reply(x, "load_lora_adapter", request_id,
                 ErrorResponse(400, "lora_name must differ from the base model's name", "lora_name"));
  }
  const std::string name = req->name;
  // Answered from the registry's loader thread, or at once on an early error.
  core_->LoadAdapter(req->name, req->path, /*replace=*/false, /*pin=*/false,
                     [this, x, request_id, name](absl::StatusOr<adapters::AdapterInfo> result) {
                       if (result.ok()) {
                         return Reply(x, "load_lora_adapter", request_id,
                                      PlainText(absl::StrCat("Success: LoRA adapter '", name, "' added successfully.")));
                       }
                       absl::Status st = result.status();
                       // vLLM answers 400 for a name that is already loaded.
                       HttpResponse r = st.code() == absl::StatusCode::kAlreadyExists
                                            ? ErrorResponse(400, std::string(st.message()), "lora_name")
                                            : ErrorResponse(st);
                       Reply(x, "load_lora_adapter", request_id, std::move(r));
                     });
}

void OpenAiService::UnloadLora(const Exchange& x, const std::string& request_id) {
  absl::StatusOr<std::string> name = ParseUnloadLoraRequest(x->request().body);
  if (!name.ok()) return Reply(x, "unload_lora_adapter", request_id, ErrorResponse(name.status()));
  absl::Status st = core_->UnloadAdapter(*name, /*keep_on_disk=*/false);
  if (!st.ok()) return Reply(x, "unload_lora_adapter", request_id, ErrorResponse(WithParam(st, "lora_name")));
  Reply(x, "unload_lora_adapter", request_id,
        PlainText(absl::StrCat("Success: LoRA adapter '", *name, "' removed successfully.")));
}

void OpenAiService::Health(const Exchange& x, const std::string& request_id) {
  if (core_->serving()) return Reply(x, "health", request_id, PlainText(""));
  Reply(x, "health", request_id, ErrorResponse(503, "the server is shutting down"));
}

}  // namespace adapterd::http
