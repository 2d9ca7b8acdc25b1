// The TLS options of the command line, shared by the tools: whether any was
// given (each one turns TLS on) and which combinations cannot work. The
// checks throw UsageError (exit 2) before any file is read; a file that
// cannot be loaded is a runtime failure, found by the context's create().
// Thread safety: for main() only.
#pragma once

#include "net/tls.hpp"

namespace memsync::cli {

// Clients: --tls-ca, --tls-cert, --tls-key, --tls-psk, --tls-identity,
// --tls-hostname (a tool declares the ones it offers).
bool tls_client_options_given(const TlsClientOptions& o);
void check_tls_client_options(const TlsClientOptions& o);

// Servers: --tls-cert, --tls-key, --tls-ca, --tls-psk.
bool tls_server_options_given(const TlsServerOptions& o);
void check_tls_server_options(const TlsServerOptions& o);

}  // namespace memsync::cli
