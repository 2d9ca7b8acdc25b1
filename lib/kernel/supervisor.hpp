// Supervisor: keeps an attached device and its server together for as long
// as the device lives (nbd-attach's spawn mode, --persist, TLS relays, the
// ioctl path; ram-dl).
//
// It ends when
//   - stop() is called (a signal): the device is detached and a spawned
//     server stopped                                        -> Stopped
//   - someone else detached the device (nbd-attach --detach) -> Detached
//   - the server went away (its command exited, or the connection died)
//     and persist is off: the device is detached            -> ServerGone
//     (with the ioctl interface, which does not say why NBD_DO_IT
//     returned, any end not asked for by stop() counts as this)
// With persist, a dead connection (the kernel's link-dead event, or the
// spawned server exiting) is reconnected with capped exponential backoff
// and the device reconfigured in place; the kernel holds I/O meanwhile, up
// to the dead-connection timeout given at attach. Should that expire before
// a reconnect succeeds, the device is detached               -> ServerGone
//
// Thread safety: run() on one thread; stop() from any thread.
#pragma once

#include <chrono>
#include <memory>

#include "kernel/attach.hpp"
#include "kernel/connector.hpp"
#include "kernel/nbd_netlink.hpp"
#include "util/fd.hpp"

namespace memsync::kernel {

struct SuperviseOptions {
  bool persist = false;
  bool watch_links = true;  // listen for link-dead events (netlink devices)
  // The dead-connection timeout given to the kernel: how long reconnecting
  // may take before the kernel fails I/O and we give up.
  std::chrono::seconds dead_timeout{120};
  unsigned connections = 1;
  std::chrono::milliseconds first_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  std::chrono::milliseconds server_grace{5000};  // SIGTERM to SIGKILL for a spawned server
};

class Supervisor {
 public:
  enum class Outcome { Stopped, Detached, ServerGone };

  // Subscribes to link-dead events now (required with persist), before the
  // device is attached, so none is missed.
  static Result<std::unique_ptr<Supervisor>> create(const SuperviseOptions& o);

  Result<Outcome> run(AttachedDevice& dev, Connector& conn);
  void stop();

 private:
  Supervisor() = default;
  // Sleeps up to d; true if stop() was called meanwhile.
  bool stopped_within(std::chrono::milliseconds d);
  // True once reconnected; false if the kernel detached the device first;
  // EINTR if stopped.
  Result<bool> reconnect(AttachedDevice& dev, Connector& conn);
  SuperviseOptions opts_;
  UniqueFd stop_;  // eventfd
  std::unique_ptr<NbdLinkWatch> watch_;
};

}  // namespace memsync::kernel
