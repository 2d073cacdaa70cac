// TLS for the HTTP listener, on the same files and rules as gRPC's.
#ifndef ADAPTERD_SERVER_HTTP_TLS_CONTEXT_H_
#define ADAPTERD_SERVER_HTTP_TLS_CONTEXT_H_

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "absl/status/statusor.h"

namespace adapterd::http {

// A server context (TLS 1.2 and later) with the PEM certificate chain and
// key; with `client_ca_file`, a client certificate is requested and, when
// presented, must verify against it, as gRPC's
// REQUEST_CLIENT_CERTIFICATE_AND_VERIFY does. Errors name the flag and
// the file.
absl::StatusOr<std::unique_ptr<boost::asio::ssl::context>> MakeServerTlsContext(const std::string& cert_file,
                                                                                const std::string& key_file,
                                                                                const std::string& client_ca_file);

// The common name and subject alternative names (DNS, URI, e-mail, IP) of
// the peer's certificate, when it presented one that verified; else none.
std::vector<std::string> VerifiedClientNames(SSL* ssl);

}  // namespace adapterd::http

#endif  // ADAPTERD_SERVER_HTTP_TLS_CONTEXT_H_
