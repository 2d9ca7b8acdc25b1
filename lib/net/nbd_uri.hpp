// NBD URIs (the NBD project's doc/uri.md), for tools that connect to NBD
// servers (nbd-attach, the nbd: backend):
//
//   nbd://HOST[:PORT]/[EXPORT]            TCP, port 10809 by default
//   nbds://HOST[:PORT]/[EXPORT]           the same with TLS
//   nbd+unix:///[EXPORT]?socket=PATH      a unix socket
//   nbds+unix:///[EXPORT]?socket=PATH
//
// HOST may be an IPv6 address in brackets; EXPORT and query values are
// %-decoded; an optional USER@ before the host is kept (TLS PSK identity).
// Other query keys (tls-certificates, tls-psk-file, ...) are kept for the
// caller to accept or refuse.
// Thread safety: pure parsing.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "net/endpoint.hpp"
#include "util/status.hpp"

namespace memsync {

struct NbdUri {
  bool tls = false;
  Endpoint endpoint;                          // Kind::Tcp or Kind::Unix
  std::string export_name;                    // decoded; "" = the default export
  std::string user;                           // decoded USER@, or ""
  std::map<std::string, std::string> query;   // decoded, without "socket"
};

// True when text starts with one of the four NBD URI schemes.
bool is_nbd_uri(std::string_view text);

Result<NbdUri> parse_nbd_uri(std::string_view text);

}  // namespace memsync
