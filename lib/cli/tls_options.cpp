#include "cli/tls_options.hpp"

#include "cli/cli.hpp"

namespace memsync::cli {

bool tls_client_options_given(const TlsClientOptions& o) {
  return !o.ca_file.empty() || !o.cert_file.empty() || !o.key_file.empty() || !o.psk_file.empty() ||
         !o.psk_identity.empty() || !o.hostname.empty();
}

void check_tls_client_options(const TlsClientOptions& o) {
  if (o.cert_file.empty() != o.key_file.empty()) throw UsageError("--tls-cert and --tls-key go together");
  if (!o.psk_identity.empty() && o.psk_file.empty())
    throw UsageError("--tls-identity names a key of --tls-psk FILE: give both");
}

bool tls_server_options_given(const TlsServerOptions& o) {
  return !o.cert_file.empty() || !o.key_file.empty() || !o.ca_file.empty() || !o.psk_file.empty();
}

void check_tls_server_options(const TlsServerOptions& o) {
  if (o.cert_file.empty() != o.key_file.empty()) throw UsageError("--tls-cert and --tls-key go together");
  // A CA asks clients for certificates, which only a certificate handshake
  // does: with a PSK alone it would admit nobody.
  if (!o.ca_file.empty() && o.cert_file.empty())
    throw UsageError("--tls-ca checks client certificates, which needs a server certificate: add --tls-cert/--tls-key");
  if (o.cert_file.empty() && o.psk_file.empty()) throw UsageError("TLS needs --tls-cert and --tls-key, or --tls-psk");
}

}  // namespace memsync::cli
