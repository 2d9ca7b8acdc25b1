#include "wire/remote_target.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace memsync::wire {

std::string RemoteTarget::to_string() const { return endpoint.to_string() + (tls ? " (TLS)" : ""); }

namespace {

// A peer that vanishes without a FIN or RST (a cable pulled, a host gone)
// would leave our reader blocked forever; keepalive probes notice it in
// about 25 s, and the store then reconnects.
void enable_keepalive(int fd) {
  int on = 1, idle = 10, interval = 5, count = 3;
  (void)::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

}  // namespace

Result<Connection> dial(const RemoteTarget& target) {
  auto fd = connect_endpoint(target.endpoint);
  if (!fd) return fd.status();
  if (target.endpoint.kind == Endpoint::Kind::Tcp) enable_keepalive(fd->get());
  if (!target.tls) return Connection{nullptr, std::make_unique<Channel>(std::move(fd).value())};
  TlsClientOptions tls = *target.tls;
  if (tls.hostname.empty() && target.endpoint.kind == Endpoint::Kind::Tcp) tls.hostname = target.endpoint.host;
  auto ctx = TlsClientContext::create(tls);
  if (!ctx) return ctx.status();
  auto session = (*ctx)->connect(std::move(fd).value());
  if (!session) return session.status();
  return Connection{std::move(session->relay), std::make_unique<Channel>(std::move(session->plain))};
}

}  // namespace memsync::wire
