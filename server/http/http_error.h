// The one conversion from absl::Status to an HTTP status and OpenAI's error
// body, as rpc::ToGrpcStatus is for gRPC.
#ifndef ADAPTERD_SERVER_HTTP_HTTP_ERROR_H_
#define ADAPTERD_SERVER_HTTP_HTTP_ERROR_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "server/http/http_exchange.h"

namespace adapterd::http {

// The HTTP status for a canonical code: INVALID_ARGUMENT, FAILED_PRECONDITION
// and OUT_OF_RANGE 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403,
// NOT_FOUND 404, ALREADY_EXISTS and ABORTED 409, RESOURCE_EXHAUSTED 429,
// CANCELLED 499, UNIMPLEMENTED 501, UNAVAILABLE 503, DEADLINE_EXCEEDED 504,
// the rest 500.
int HttpStatusFor(absl::StatusCode code);

// `status` with the name of the request field it is about, which the error
// body reports as "param".
absl::Status WithParam(absl::Status status, std::string_view param);
std::optional<std::string> ParamOf(const absl::Status& status);

// OpenAI's error object, {"error": {"message", "type", "param", "code"}},
// with `code` the HTTP status (as vLLM sends it) and `type` OpenAI's name
// for the class of error.
std::string ErrorJson(int http_status, std::string_view message, const std::optional<std::string>& param);

// The response for a failed request: status, OpenAI's error body, and
// "WWW-Authenticate: Bearer" on 401.
HttpResponse ErrorResponse(const absl::Status& status);
HttpResponse ErrorResponse(int http_status, std::string_view message,
                           const std::optional<std::string>& param = std::nullopt);

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_HTTP_ERROR_H_
