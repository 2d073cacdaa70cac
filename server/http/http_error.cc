#include "server/http/http_error.h"

#include "absl/strings/cord.h"
#include "absl/types/optional.h"
#include "nlohmann/json.hpp"

namespace adapterd::http {
namespace {

constexpr std::string_view kParamPayload = "type.adapterd.dev/http-param";

std::string_view ErrorType(int http_status) {
  switch (http_status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 409: return "conflict_error";
    case 429: return "rate_limit_error";
    case 499: return "cancelled";
    case 501: return "not_implemented_error";
    case 503: return "service_unavailable_error";
    case 504: return "timeout_error";
    default: return http_status >= 500 ? "server_error" : "invalid_request_error";
  }
}

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

absl::Status WithParam(absl::Status status, std::string_view param) {
  if (!status.ok()) {
    status.SetPayload(absl::string_view(kParamPayload.data(), kParamPayload.size()),
                      absl::Cord(absl::string_view(param.data(), param.size())));
  }
  return status;
}

std::optional<std::string> ParamOf(const absl::Status& status) {
  absl::optional<absl::Cord> p = status.GetPayload(absl::string_view(kParamPayload.data(), kParamPayload.size()));
  if (!p.has_value()) return std::nullopt;
  return std::string(*p);
}

std::string ErrorJson(int http_status, std::string_view message, const std::optional<std::string>& param) {
  nlohmann::json error = {{"message", message},
                          {"type", ErrorType(http_status)},
                          {"param", nullptr},
                          {"code", http_status}};
  if (param.has_value()) error["param"] = *param;
  return nlohmann::json{{"error", std::move(error)}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

HttpResponse ErrorResponse(int http_status, std::string_view message, const std::optional<std::string>& param) {
  HttpResponse r;
  r.status = http_status;
  r.body = ErrorJson(http_status, message, param);
  if (http_status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

HttpResponse ErrorResponse(const absl::Status& status) {
  return ErrorResponse(HttpStatusFor(status.code()), std::string_view(status.message().data(), status.message().size()),
                       ParamOf(status));
}

}  // namespace adapterd::http
