#include "kernel/nbd_ioctl.hpp"

#include <fcntl.h>
#include <linux/nbd.h>
#include <sys/ioctl.h>

#include "kernel/nbd_device.hpp"
#include "util/log.hpp"

namespace memsync::kernel {
namespace {

Status set(int fd, unsigned long request, unsigned long value, const char* what) {
  if (::ioctl(fd, request, value) < 0) return Status::from_errno(std::string("ioctl ") + what);
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<NbdIoctlDevice>> NbdIoctlDevice::attach(const NbdConnect& c) {
  if (!c.index) return Status::invalid("ioctl attach needs a device (--device)");
  std::string path = device_path(*c.index);
  std::unique_ptr<NbdIoctlDevice> d(new NbdIoctlDevice());
  d->dev_.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!d->dev_.valid()) return Status::from_errno("open " + path);
  int fd = d->dev_.get();
  // A device still holding sockets from an earlier owner refuses SET_SOCK
  // with EBUSY, which is the message we want: it is in use.
  MEMSYNC_TRY(set(fd, NBD_SET_BLKSIZE, c.block_size, "NBD_SET_BLKSIZE"));
  MEMSYNC_TRY(set(fd, NBD_SET_SIZE, c.size_bytes, "NBD_SET_SIZE"));
  if (c.timeout_s) MEMSYNC_TRY(set(fd, NBD_SET_TIMEOUT, *c.timeout_s, "NBD_SET_TIMEOUT"));
  MEMSYNC_TRY(set(fd, NBD_SET_FLAGS, c.server_flags, "NBD_SET_FLAGS"));
  for (int s : c.sockets) {
    if (::ioctl(fd, NBD_SET_SOCK, s) < 0) {
      Status st = Status::from_errno("add a socket to " + path + " (NBD_SET_SOCK)");
      (void)::ioctl(fd, NBD_CLEAR_SOCK);
      return st;
    }
  }
  NbdIoctlDevice* self = d.get();
  d->do_it_ = std::jthread([self, path] {
    // Blocks until the device is disconnected.
    if (::ioctl(self->dev_.get(), NBD_DO_IT) < 0 && errno != EPIPE && errno != ECONNRESET)
      log::info(Status::from_errno(path + " NBD_DO_IT ended").message());
    (void)::ioctl(self->dev_.get(), NBD_CLEAR_QUE);
    (void)::ioctl(self->dev_.get(), NBD_CLEAR_SOCK);
    self->finished_ = true;
  });
  return d;
}

Status NbdIoctlDevice::disconnect() {
  if (finished_.load()) return Status::ok();
  if (::ioctl(dev_.get(), NBD_DISCONNECT) < 0) return Status::from_errno("ioctl NBD_DISCONNECT");
  return Status::ok();
}

NbdIoctlDevice::~NbdIoctlDevice() {
  if (do_it_.joinable()) {
    Status st = disconnect();
    if (!st) log::warn(st.message());
    do_it_.join();
  }
}

Status ioctl_disconnect(uint32_t index) {
  std::string path = device_path(index);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return Status::from_errno("open " + path);
  if (::ioctl(fd.get(), NBD_DISCONNECT) < 0) return Status::from_errno("detach " + path + " (NBD_DISCONNECT)");
  return Status::ok();
}

}  // namespace memsync::kernel
