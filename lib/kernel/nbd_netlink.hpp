// NbdNetlink: the kernel's "nbd" generic-netlink family, spoken through
// libnl-genl. The narrow seam between memsync and the kernel's NBD driver
// (messages are built in nbd_netlink_message.hpp, where they are tested).
//
// open() fails with ENOENT and says "modprobe nbd" when the family is not
// registered (the module is not loaded), and with EPERM when the caller may
// not use it (not root). Kernel refusals come back with the kernel's errno
// and libnl's text for it.
// Thread safety: one thread at a time per object.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "kernel/nbd_netlink_message.hpp"
#include "util/status.hpp"

struct nl_sock;

namespace memsync::kernel {

class NbdNetlink {
 public:
  static Result<std::unique_ptr<NbdNetlink>> open();
  ~NbdNetlink();
  NbdNetlink(const NbdNetlink&) = delete;
  NbdNetlink& operator=(const NbdNetlink&) = delete;

  // Hands the sockets to the kernel; returns the device index (N of /dev/nbdN).
  Result<uint32_t> connect(const NbdConnect& c);
  Status disconnect(uint32_t index);
  // New sockets for a device whose connections died (dead-conn timeout).
  Status reconfigure(uint32_t index, const std::vector<int>& sockets, std::optional<uint64_t> dead_conn_timeout_s,
                     const std::string& backend_identifier);
  Result<std::vector<DeviceStatus>> status(std::optional<uint32_t> index = std::nullopt);

 private:
  NbdNetlink() = default;
  // Sends msg and waits for the kernel's acknowledgement; *reply_copy (if
  // asked for) points at a copy of the first reply, valid until the next call.
  Status transact(NlMsg msg, const std::string& what, nlmsghdr** reply_copy);
  nl_sock* sock_ = nullptr;
  int family_ = -1;
  std::vector<char> reply_;  // the last transaction's reply
};

// Listens for the kernel's link-dead events: a device whose connection died
// while a dead-connection timeout holds its I/O (nbd-attach --persist).
class NbdLinkWatch {
 public:
  static Result<std::unique_ptr<NbdLinkWatch>> open();
  ~NbdLinkWatch();
  NbdLinkWatch(const NbdLinkWatch&) = delete;
  NbdLinkWatch& operator=(const NbdLinkWatch&) = delete;

  // Readable when events are waiting (for poll).
  int fd() const;
  // The device indexes of the events received so far (non-blocking).
  Result<std::vector<uint32_t>> take_events();

 private:
  NbdLinkWatch() = default;
  nl_sock* sock_ = nullptr;
  std::vector<uint32_t> events_;
};

}  // namespace memsync::kernel
