#include "server/http/tls_context.h"

#include <arpa/inet.h>
#include <openssl/x509v3.h>

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace adapterd::http {
namespace {

namespace ssl = boost::asio::ssl;

absl::Status Readable(const char* flag, const std::string& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(flag, "=", file, ": no such file"));
  }
  return absl::OkStatus();
}

std::string Asn1String(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
}

std::string IpString(const ASN1_OCTET_STRING* ip) {
  char buf[INET6_ADDRSTRLEN] = {};
  const int n = ASN1_STRING_length(ip);
  const int family = n == 4 ? AF_INET : n == 16 ? AF_INET6 : -1;
  if (family < 0 || inet_ntop(family, ASN1_STRING_get0_data(ip), buf, sizeof buf) == nullptr) return "";
  return buf;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ssl::context>> MakeServerTlsContext(const std::string& cert_file,
                                                                   const std::string& key_file,
                                                                   const std::string& client_ca_file) {
  if (cert_file.empty() || key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls_cert_file and --tls_key_file");
  }
  if (absl::Status st = Readable("--tls_cert_file", cert_file); !st.ok()) return st;
  if (absl::Status st = Readable("--tls_key_file", key_file); !st.ok()) return st;
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cert_file, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls_cert_file=", cert_file, ": ", ec.message()));
  ctx->use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls_key_file=", key_file, ": ", ec.message()));
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_key_file=", key_file, " does not match --tls_cert_file=", cert_file));
  }
  if (!client_ca_file.empty()) {
    if (absl::Status st = Readable("--tls_client_ca_file", client_ca_file); !st.ok()) return st;
    ctx->load_verify_file(client_ca_file, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat("--tls_client_ca_file=", client_ca_file, ": ", ec.message()));
    }
    // Tells clients which CAs are accepted; a client without a certificate
    // may still connect and present a bearer token instead.
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(client_ca_file.c_str());
    if (names != nullptr) SSL_CTX_set_client_CA_list(ctx->native_handle(), names);
    ctx->set_verify_mode(ssl::verify_peer);
  } else {
    ctx->set_verify_mode(ssl::verify_none);
  }
  return ctx;
}

std::vector<std::string> VerifiedClientNames(SSL* ssl) {
  std::vector<std::string> names;
  if (ssl == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return names;
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return names;
  if (X509_NAME* subject = X509_get_subject_name(cert)) {
    for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
         i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) {
      names.push_back(Asn1String(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i))));
    }
  }
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans, i);
      switch (n->type) {
        case GEN_DNS: names.push_back(Asn1String(n->d.dNSName)); break;
        case GEN_URI: names.push_back(Asn1String(n->d.uniformResourceIdentifier)); break;
        case GEN_EMAIL: names.push_back(Asn1String(n->d.rfc822Name)); break;
        case GEN_IPADD: names.push_back(IpString(n->d.iPAddress)); break;
        default: break;
      }
    }
    GENERAL_NAMES_free(sans);
  }
  X509_free(cert);
  return names;
}

}  // namespace adapterd::http
