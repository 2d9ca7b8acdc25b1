#include "net/endpoint.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>

namespace memsync {
namespace {

Result<uint16_t> parse_port(std::string_view s, std::string_view whole) {
  if (s.empty() || s.size() > 5) return Status::invalid("endpoint '" + std::string(whole) + "' needs a port number (0-65535)");
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return Status::invalid("endpoint '" + std::string(whole) + "': port '" + std::string(s) + "' is not a number");
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535) return Status::invalid("endpoint '" + std::string(whole) + "': port " + std::string(s) + " is out of range");
  return static_cast<uint16_t>(v);
}

struct UnixAddress {
  sockaddr_un sa{};
  socklen_t len = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&sa); }
};

Result<UnixAddress> unix_address(const std::string& path) {
  UnixAddress a;
  a.sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sa.sun_path)
    return Status::invalid("unix socket path is longer than " + std::to_string(sizeof a.sa.sun_path - 1) + " bytes: " + path);
  std::memcpy(a.sa.sun_path, path.data(), path.size());
  const bool abstract = !path.empty() && path[0] == '@';
  if (abstract) a.sa.sun_path[0] = '\0';
  a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (abstract ? 0 : 1));
  return a;
}

// A connected unix socket, or the connect error.
Result<UniqueFd> connect_unix(const UnixAddress& a, const std::string& what) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::from_errno("socket");
  if (::connect(fd.get(), a.get(), a.len) != 0) return Status::from_errno("connect to " + what);
  return fd;
}

using AddrInfoList = std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)>;

// getaddrinfo for a TCP endpoint; an empty host is loopback, "*" (listening
// only) every interface.
Result<AddrInfoList> resolve_tcp(const Endpoint& ep, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  const char* node = ep.host.c_str();
  if (ep.host.empty()) node = "127.0.0.1";
  else if (ep.host == "*") node = passive ? nullptr : "127.0.0.1";
  addrinfo* res = nullptr;
  std::string port = std::to_string(ep.port);
  int rc = ::getaddrinfo(node, port.c_str(), &hints, &res);
  if (rc != 0) return Status::error(EHOSTUNREACH, "resolve " + ep.to_string() + ": " + gai_strerror(rc));
  return AddrInfoList(res, &::freeaddrinfo);
}

}  // namespace

std::string Endpoint::to_string() const {
  switch (kind) {
    case Kind::Stdio: return "-";
    case Kind::Fd: return "fd:" + std::to_string(fd);
    case Kind::Unix: return "unix:" + path;
    case Kind::Tcp: {
      std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
      return "tcp:" + h + ":" + std::to_string(port);
    }
  }
  return text;
}

Result<Endpoint> parse_endpoint(std::string_view text) {
  Endpoint ep;
  ep.text = std::string(text);
  if (text == "-") return ep;
  auto bad = [&](const std::string& why) {
    return Status::invalid("endpoint '" + std::string(text) + "': " + why);
  };
  if (text.starts_with("fd:")) {
    std::string_view n = text.substr(3);
    if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string_view::npos)
      return bad("expected fd:N with N a descriptor number");
    ep.kind = Endpoint::Kind::Fd;
    ep.fd = std::atoi(std::string(n).c_str());
    return ep;
  }
  if (text.starts_with("unix:")) {
    ep.kind = Endpoint::Kind::Unix;
    ep.path = std::string(text.substr(5));
    if (ep.path.empty() || ep.path == "@") return bad("expected unix:PATH");
    return ep;
  }
  if (text.starts_with("tcp:")) {
    ep.kind = Endpoint::Kind::Tcp;
    std::string_view rest = text.substr(4);
    std::string_view port;
    if (rest.starts_with("[")) {
      auto close = rest.find(']');
      if (close == std::string_view::npos) return bad("unterminated [ in IPv6 address");
      ep.host = std::string(rest.substr(1, close - 1));
      if (ep.host.empty()) return bad("empty IPv6 address");
      if (ep.host.find(':') == std::string::npos || ep.host.find_first_of("[]") != std::string::npos)
        return bad("brackets hold an IPv6 address, as tcp:[::1]:PORT");
      rest = rest.substr(close + 1);
      if (!rest.starts_with(":")) return bad("expected :PORT after ]");
      port = rest.substr(1);
    } else {
      auto colon = rest.rfind(':');
      if (colon == std::string_view::npos) return bad("expected tcp:HOST:PORT");
      ep.host = std::string(rest.substr(0, colon));
      if (ep.host.find(':') != std::string::npos) return bad("write IPv6 addresses in brackets, as tcp:[::1]:PORT");
      if (ep.host.find_first_of("[]") != std::string::npos) return bad("unbalanced [ or ] in the host");
      port = rest.substr(colon + 1);
    }
    auto p = parse_port(port, text);
    if (!p) return p.status();
    ep.port = *p;
    return ep;
  }
  return bad("expected -, fd:N, unix:PATH or tcp:HOST:PORT");
}

bool is_listening_socket(int fd) {
  int v = 0;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v != 0;
}

Result<std::vector<UniqueFd>> listen_endpoint(const Endpoint& ep, int backlog) {
  std::vector<UniqueFd> out;
  switch (ep.kind) {
    case Endpoint::Kind::Stdio:
      return Status::invalid("cannot listen on '-' (standard input is a single connection)");
    case Endpoint::Kind::Fd: {
      if (!is_listening_socket(ep.fd))
        return Status::invalid("fd:" + std::to_string(ep.fd) + " is not a listening socket");
      ::fcntl(ep.fd, F_SETFD, FD_CLOEXEC);
      out.emplace_back(ep.fd);
      return out;
    }
    case Endpoint::Kind::Unix: {
      auto addr = unix_address(ep.path);
      if (!addr) return addr.status();
      UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!fd) return Status::from_errno("socket");
      if (::bind(fd.get(), addr->get(), addr->len) != 0) {
        if (errno != EADDRINUSE || ep.path[0] == '@') return Status::from_errno("bind " + ep.to_string());
        // Is anybody still there? Only a dead socket file may be replaced.
        if (connect_unix(*addr, ep.to_string()))
          return Status::error(EADDRINUSE, "bind " + ep.to_string() + ": a server is already listening there");
        struct stat st{};
        if (::lstat(ep.path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode))
          return Status::error(EADDRINUSE, "bind " + ep.to_string() + ": the path exists and is not a socket");
        ::unlink(ep.path.c_str());
        if (::bind(fd.get(), addr->get(), addr->len) != 0) return Status::from_errno("bind " + ep.to_string());
      }
      if (::listen(fd.get(), backlog) != 0) return Status::from_errno("listen on " + ep.to_string());
      out.push_back(std::move(fd));
      return out;
    }
    case Endpoint::Kind::Tcp: {
      auto res = resolve_tcp(ep, true);
      if (!res) return res.status();
      Status last;
      for (addrinfo* ai = res->get(); ai; ai = ai->ai_next) {
        UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
        if (!fd) { last = Status::from_errno("socket"); continue; }
        int one = 1;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) { last = Status::from_errno("bind " + ep.to_string()); continue; }
        if (::listen(fd.get(), backlog) != 0) { last = Status::from_errno("listen on " + ep.to_string()); continue; }
        out.push_back(std::move(fd));
        if (ep.port == 0) break;  // an ephemeral port is chosen per socket: keep one
      }
      if (out.empty()) return last.is_ok() ? Status::invalid("no address for " + ep.to_string()) : last;
      return out;
    }
  }
  return Status::invalid("unknown endpoint kind");
}

Result<UniqueFd> connect_endpoint(const Endpoint& ep) {
  switch (ep.kind) {
    case Endpoint::Kind::Stdio:
      return Status::invalid("cannot connect to '-'");
    case Endpoint::Kind::Fd:
      if (is_listening_socket(ep.fd)) return Status::invalid("fd:" + std::to_string(ep.fd) + " is a listening socket, not a connection");
      return UniqueFd(ep.fd);
    case Endpoint::Kind::Unix: {
      auto addr = unix_address(ep.path);
      if (!addr) return addr.status();
      return connect_unix(*addr, ep.to_string());
    }
    case Endpoint::Kind::Tcp: {
      auto res = resolve_tcp(ep, false);
      if (!res) return res.status();
      Status last = Status::error(ECONNREFUSED, "connect to " + ep.to_string());
      for (addrinfo* ai = res->get(); ai; ai = ai->ai_next) {
        UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
        if (!fd) { last = Status::from_errno("socket"); continue; }
        if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) { last = Status::from_errno("connect to " + ep.to_string()); continue; }
        return fd;
      }
      return last;
    }
  }
  return Status::invalid("unknown endpoint kind");
}

std::vector<UniqueFd> take_activated_sockets() {
  std::vector<UniqueFd> out;
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  if (!pid || !fds) return out;
  bool mine = std::strtol(pid, nullptr, 10) == static_cast<long>(::getpid());
  long n = std::strtol(fds, nullptr, 10);
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (!mine || n <= 0 || n > 64) return out;
  for (int fd = 3; fd < 3 + n; ++fd) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    out.emplace_back(fd);
  }
  return out;
}

Result<Endpoint> local_endpoint(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return Status::from_errno("getsockname");
  Endpoint ep;
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_UNIX) {
    auto* sa = reinterpret_cast<sockaddr_un*>(&ss);
    ep.kind = Endpoint::Kind::Unix;
    size_t n = len - offsetof(sockaddr_un, sun_path);
    if (n > 0 && sa->sun_path[0] == '\0') ep.path = "@" + std::string(sa->sun_path + 1, n - 1);
    else ep.path = sa->sun_path;
  } else if (ss.ss_family == AF_INET) {
    auto* sa = reinterpret_cast<sockaddr_in*>(&ss);
    ep.kind = Endpoint::Kind::Tcp;
    ::inet_ntop(AF_INET, &sa->sin_addr, host, sizeof host);
    ep.host = host;
    ep.port = ntohs(sa->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&ss);
    ep.kind = Endpoint::Kind::Tcp;
    ::inet_ntop(AF_INET6, &sa->sin6_addr, host, sizeof host);
    ep.host = host;
    ep.port = ntohs(sa->sin6_port);
  } else {
    return Status::invalid("unknown socket family");
  }
  ep.text = ep.to_string();
  return ep;
}

}  // namespace memsync
