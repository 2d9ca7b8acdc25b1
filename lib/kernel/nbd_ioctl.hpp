// The kernel's older ioctl interface to NBD devices (linux/nbd.h), kept as a
// fallback for kernels without the netlink family and for --ioctl.
//
// Unlike netlink, ioctl attach needs a named device and a thread that stays
// blocked in NBD_DO_IT for as long as the device is attached: the device
// lives exactly as long as this object's thread, so the owning process must
// keep running.
//
// Thread safety: disconnect() from any thread; the rest from the owner.
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "kernel/nbd_netlink_message.hpp"
#include "util/fd.hpp"
#include "util/status.hpp"

namespace memsync::kernel {

class NbdIoctlDevice {
 public:
  // REQUIRES: c.index is set. Sets sizes, timeout and flags, adds every
  // socket and starts the NBD_DO_IT thread.
  static Result<std::unique_ptr<NbdIoctlDevice>> attach(const NbdConnect& c);
  ~NbdIoctlDevice();  // disconnects and waits for NBD_DO_IT to return
  NbdIoctlDevice(const NbdIoctlDevice&) = delete;
  NbdIoctlDevice& operator=(const NbdIoctlDevice&) = delete;

  Status disconnect();
  // True once NBD_DO_IT has returned (the device is detached).
  bool finished() const { return finished_.load(); }

 private:
  NbdIoctlDevice() = default;
  UniqueFd dev_;
  std::atomic<bool> finished_{false};
  std::jthread do_it_;
};

// NBD_DISCONNECT through the device node, for devices attached by ioctl.
Status ioctl_disconnect(uint32_t index);

}  // namespace memsync::kernel
