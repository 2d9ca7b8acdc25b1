// Endpoints: the one syntax every memsync tool uses for a byte stream.
//
//   -              standard input and output
//   fd:N           an inherited descriptor: a listening socket if it is one
//                  (SO_ACCEPTCONN), otherwise a connected stream
//   unix:PATH      a unix-domain socket; unix:@NAME is the abstract namespace
//   tcp:HOST:PORT  TCP; HOST is a name, an IPv4 address or [IPv6]. An empty
//                  HOST (tcp::PORT) means loopback. Listening on every
//                  interface must be asked for explicitly: tcp:0.0.0.0:PORT,
//                  tcp:[::]:PORT or tcp:*:PORT.
//
// Thread safety: pure parsing; listen/connect touch only what they create.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/fd.hpp"
#include "util/status.hpp"

namespace memsync {

struct Endpoint {
  enum class Kind { Stdio, Fd, Unix, Tcp };
  Kind kind = Kind::Stdio;
  int fd = -1;           // Kind::Fd
  std::string path;      // Kind::Unix; leading '@' = abstract
  std::string host;      // Kind::Tcp; without brackets; "" = loopback, "*" = any
  uint16_t port = 0;     // Kind::Tcp; 0 lets the kernel choose when listening
  std::string text;      // as written by the user

  // Canonical text, e.g. "tcp:[::1]:10809", for logs and $uri.
  std::string to_string() const;
};

Result<Endpoint> parse_endpoint(std::string_view text);

// Binds and listens. A unix socket path left behind by a dead process is
// replaced; one that a live server still answers on is an error (EADDRINUSE).
// fd:N must name a listening socket. Returns every listening descriptor
// (a name may resolve to several addresses).
Result<std::vector<UniqueFd>> listen_endpoint(const Endpoint& ep, int backlog = 128);

// Connects (blocking). fd:N must name a connected stream; Stdio is refused.
Result<UniqueFd> connect_endpoint(const Endpoint& ep);

// Listening sockets passed by systemd-style socket activation (LISTEN_PID is
// this process, LISTEN_FDS = n: descriptors 3..3+n-1). The variables are
// removed so children do not inherit them. Empty when not activated.
std::vector<UniqueFd> take_activated_sockets();

// True if fd is a listening socket.
bool is_listening_socket(int fd);

// The local address of a listening socket as an endpoint (after port 0).
Result<Endpoint> local_endpoint(int fd);

}  // namespace memsync
