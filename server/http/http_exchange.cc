#include "server/http/http_exchange.h"

namespace adapterd::http {

std::string_view HttpRequest::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (n == name) return v;
  }
  return {};
}

}  // namespace adapterd::http
