#include "net/acceptor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "util/log.hpp"

namespace memsync {

Acceptor::Acceptor(Converse converse, unsigned max_connections)
    : converse_(std::move(converse)),
      max_connections_(max_connections),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

Acceptor::~Acceptor() {
  stop();
  reap(true);
}

void Acceptor::stop() {
  if (stopping_.exchange(true)) return;
  {
    std::lock_guard lock(mu_);
    for (auto& c : conns_) c.channel->stop();
  }
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void Acceptor::join() { reap(true); }

void Acceptor::reap(bool all) {
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

void Acceptor::start(UniqueFd conn) {
  std::lock_guard lock(mu_);
  if (stopping_.load()) return;  // stop() has already stopped the others; conn closes
  auto& slot = conns_.emplace_back();
  slot.channel = std::make_shared<Channel>(std::move(conn));
  ++active_;
  slot.thread = std::jthread([this, &slot] {
    Status st = converse_(*slot.channel);
    if (!st) log::warn("connection ended: " + st.message());
    else log::info("connection closed");
    slot.channel->shutdown_write();
    --active_;
    slot.finished = true;
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  });
}

void Acceptor::adopt(UniqueFd conn) { start(std::move(conn)); }

Status Acceptor::run(std::vector<UniqueFd> listeners) {
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
      if (active_.load() >= max_connections_) {
        log::warn("refusing a connection: already serving " + std::to_string(max_connections_) +
                  " (--max-connections)");
        continue;
      }
      log::info("new connection");
      start(std::move(conn));
    }
  }
  listeners.clear();  // refuse new clients while the others finish
  reap(true);
  return Status::ok();
}

}  // namespace memsync
