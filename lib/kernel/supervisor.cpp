#include "kernel/supervisor.hpp"

#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>

#include "util/log.hpp"

namespace memsync::kernel {

Result<std::unique_ptr<Supervisor>> Supervisor::create(const SuperviseOptions& o) {
  std::unique_ptr<Supervisor> s(new Supervisor());
  s->opts_ = o;
  s->stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!s->stop_.valid()) return Status::from_errno("eventfd");
  if (o.persist || o.watch_links) {
    auto w = NbdLinkWatch::open();
    if (w) s->watch_ = std::move(w).value();
    else if (o.persist) return w.status().with_context("watch for dead connections (--persist)");
    else log::info("not watching for dead connections: " + w.status().message());
  }
  return s;
}

void Supervisor::stop() {
  uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
}

bool Supervisor::stopped_within(std::chrono::milliseconds d) {
  pollfd p{stop_.get(), POLLIN, 0};
  int r = ::poll(&p, 1, static_cast<int>(d.count()));
  return r > 0;
}

Result<bool> Supervisor::reconnect(AttachedDevice& dev, Connector& conn) {
  auto backoff = opts_.first_backoff;
  const auto deadline = std::chrono::steady_clock::now() + opts_.dead_timeout;
  for (unsigned attempt = 1;; ++attempt) {
    if (!dev.connected()) {
      log::warn(dev.path() + ": detached while reconnecting");
      return false;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      // The kernel fails the held I/O now; a device that answers EIO is
      // worse than none.
      log::warn(dev.path() + ": no reconnect within the dead-connection timeout (" +
                std::to_string(opts_.dead_timeout.count()) + "s): detaching");
      (void)conn.stop_server(opts_.server_grace);
      Status st = dev.detach();
      if (!st) log::warn(st.message());
      return false;
    }
    (void)conn.stop_server(opts_.server_grace);  // a spawned server that half-died
    auto conns = conn.connect(opts_.connections);
    if (conns) {
      Status st = dev.reconfigure(std::move(conns).value());
      if (st) {
        log::warn(dev.path() + ": reconnected to " + conn.describe() + " after " + std::to_string(attempt) +
                  (attempt == 1 ? " attempt" : " attempts"));
        return true;
      }
      log::warn(dev.path() + ": " + st.message());
    } else {
      log::warn(dev.path() + ": reconnect to " + conn.describe() + " failed: " + conns.status().message());
    }
    if (stopped_within(backoff)) return Status::error(EINTR, "stopped while reconnecting");
    backoff = std::min(backoff * 2, opts_.max_backoff);
  }
}

Result<Supervisor::Outcome> Supervisor::run(AttachedDevice& dev, Connector& conn) {
  for (;;) {
    pollfd p[2] = {{stop_.get(), POLLIN, 0}, {watch_ ? watch_->fd() : -1, POLLIN, 0}};
    int r = ::poll(p, watch_ ? 2 : 1, 250);
    if (r < 0 && errno != EINTR) return Status::from_errno("poll");
    if (p[0].revents) {
      Status st = dev.detach();
      (void)conn.stop_server(opts_.server_grace);
      if (!st) return st;
      return Outcome::Stopped;
    }
    bool dead = false;
    if (watch_ && p[1].revents) {
      auto events = watch_->take_events();
      if (!events) return events.status();
      dead = std::find(events->begin(), events->end(), dev.index()) != events->end();
      if (dead) log::warn(dev.path() + ": the connection to " + conn.describe() + " died");
    }
    if (!dev.connected()) {
      // Detached by someone else: a spawned server got DISC and ends by
      // itself; its status tells an ioctl device's two kinds of end apart.
      auto code = conn.wait_server_exit(opts_.server_grace);
      (void)conn.stop_server(opts_.server_grace);
      if (dev.via_ioctl() && !(code && *code == 0)) {
        log::warn(dev.path() + ": the kernel ended the connection to " + conn.describe());
        return Outcome::ServerGone;
      }
      return Outcome::Detached;
    }
    if (auto code = conn.server_exit()) {
      log::warn("'" + conn.describe() + "' exited with status " + std::to_string(*code) +
                (opts_.persist ? "; restarting it" : "; detaching " + dev.path()));
      dead = true;
    }
    if (!dead) continue;
    if (!opts_.persist) {
      Status st = dev.detach();
      (void)conn.stop_server(opts_.server_grace);
      if (!st) return st;
      return Outcome::ServerGone;
    }
    auto again = reconnect(dev, conn);
    if (!again) {
      if (again.status().code() == EINTR) {
        Status st = dev.detach();
        (void)conn.stop_server(opts_.server_grace);
        if (!st) return st;
        return Outcome::Stopped;
      }
      return again.status();
    }
    if (!*again) return Outcome::ServerGone;
  }
}

}  // namespace memsync::kernel
