#include "nbd/server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "nbd/handshake.hpp"
#include "net/endpoint.hpp"
#include "util/log.hpp"

namespace memsync::nbd {

NbdServer::NbdServer(std::shared_ptr<Store> store, ServerOptions opts)
    : store_(std::move(store)), opts_(std::move(opts)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

NbdServer::~NbdServer() {
  stop();
  reap(true);
}

Status NbdServer::serve(Channel& ch) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Status::ok();
    single_ = &ch;
  }
  ++active_;
  Status st = converse(ch);
  {
    std::lock_guard lock(mu_);
    single_ = nullptr;
  }
  --active_;
  return st;
}

Status NbdServer::converse(Channel& ch) {
  // A client that connects and then says nothing must not hold a slot.
  ch.set_read_deadline(opts_.handshake_timeout_ms);
  auto session = server_handshake(ch, opts_.export_config, *store_);
  ch.set_read_deadline(0);
  if (!session) {
    if (session.status().code() == ETIMEDOUT) return session.status().with_context("handshake");
    return session.status().is_reconnect() ? Status::ok() : session.status();
  }
  log::info("handshake done: structured replies " + std::string(session->structured_replies ? "on" : "off") +
            ", TLS " + (session->tls ? "on" : "off"));
  return run_transmission(ch, *store_, opts_.export_config, *session, opts_.transmission);
}

void NbdServer::stop() {
  if (stopping_.exchange(true)) return;
  {
    std::lock_guard lock(mu_);
    for (auto& c : conns_) c.channel->stop();
    if (single_) single_->stop();
  }
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void NbdServer::reap(bool all) {
  std::list<Connection> done;
  {
    std::lock_guard lock(mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      auto next = std::next(it);
      if (all || it->finished.load()) done.splice(done.end(), conns_, it);
      it = next;
    }
  }
  done.clear();  // joins their threads outside the lock
}

void NbdServer::start_connection(UniqueFd conn) {
  std::lock_guard lock(mu_);
  if (stopping_.load()) return;  // stop() has already stopped the others; conn closes
  auto& slot = conns_.emplace_back();
  slot.channel = std::make_shared<Channel>(std::move(conn));
  ++active_;
  slot.thread = std::jthread([this, &slot] {
    Status st = converse(*slot.channel);
    if (!st) log::warn("connection ended: " + st.message());
    else log::info("connection closed");
    slot.channel->shutdown_write();
    --active_;
    slot.finished = true;
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  });
}

void NbdServer::adopt(UniqueFd conn) { start_connection(std::move(conn)); }

void NbdServer::join() { reap(true); }

Status NbdServer::run(std::vector<UniqueFd> listeners) {
  if (listeners.empty()) return Status::invalid("no socket to listen on");
  for (auto& l : listeners) ::fcntl(l.get(), F_SETFL, ::fcntl(l.get(), F_GETFL) | O_NONBLOCK);
  std::vector<pollfd> fds;
  for (auto& l : listeners) fds.push_back({l.get(), POLLIN, 0});
  fds.push_back({wake_.get(), POLLIN, 0});
  while (!stopping_.load()) {
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("poll");
    }
    if (fds.back().revents) {
      uint64_t n;
      (void)!::read(wake_.get(), &n, sizeof n);
      reap(false);
    }
    for (size_t i = 0; i + 1 < fds.size() && !stopping_.load(); ++i) {
      if (!fds[i].revents) continue;
      int c = ::accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
          log::warn(Status::from_errno("accept").message());
        if (errno == EMFILE || errno == ENFILE) reap(false);
        continue;
      }
      UniqueFd conn(c);
      if (active_.load() >= opts_.max_connections) {
        log::warn("refusing a connection: already serving " + std::to_string(opts_.max_connections) +
                  " (--max-connections)");
        continue;
      }
      log::info("new connection");
      start_connection(std::move(conn));
    }
  }
  listeners.clear();  // refuse new clients while the others finish
  reap(true);
  Status st = store_->sync();
  if (!st) return st.with_context("final sync");
  return Status::ok();
}

}  // namespace memsync::nbd
