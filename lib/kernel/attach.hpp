// Attaching NBD connections to a kernel block device: the one place that
// decides how an export meets the kernel, shared by nbd-attach, ram-dl,
// `seeder --attach` and tapisk.
//
//   sockets --handshake_for_kernel--> (socket, ExportInfo)
//           --plan_connect----------> NbdConnect (checked against the kernel)
//           --AttachedDevice::attach-> /dev/nbdN, ready for I/O
//
// Handshake: fixed newstyle, GO with a block-size request, EXPORT_NAME for
// old servers; never structured replies, which the kernel cannot read.
// Attach: the generic-netlink "nbd" family; the ioctl interface when the
// kernel lacks the family (or when asked). After CONNECT the device's
// request size is capped at the server's maximum payload and we wait until
// the device shows its size, so a printed device path is usable at once.
// Any failure after CONNECT disconnects again: no half-attached device.
//
// Thread safety: one owner per AttachedDevice; detach() from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernel/nbd_ioctl.hpp"
#include "kernel/nbd_netlink.hpp"
#include "nbd/client_handshake.hpp"
#include "util/fd.hpp"
#include "util/status.hpp"

namespace memsync::kernel {

struct AttachOptions {
  std::optional<uint32_t> index;                // --device; else the kernel picks
  uint32_t block_size = 0;                      // 0: the server's minimum, at least 512
  std::optional<uint64_t> timeout_s;            // per-request timeout in the kernel
  std::optional<uint64_t> dead_conn_timeout_s;  // queue I/O this long while reconnecting
  bool read_only = false;
  bool use_ioctl = false;                       // skip netlink
  std::string backend_identifier;               // shown in /sys/block/nbdN/backend
};

// A socket after the handshake, ready for the kernel.
struct KernelConnection {
  UniqueFd socket;
  nbd::ExportInfo info;
  std::shared_ptr<void> tls_relay;  // keeps a TLS relay running; null without TLS
};

// Performs the client handshake on sock within `limit` (with TLS first when
// tls is given); the server's refusal comes back with its message.
Result<KernelConnection> handshake_for_kernel(UniqueFd sock, const std::string& export_name,
                                              const TlsClientContext* tls = nullptr,
                                              std::chrono::milliseconds limit = std::chrono::seconds(30));

// EOPNOTSUPP when `connections` > 1 and the server does not allow
// multi-conn; connectors ask after the first handshake, before opening more.
Status check_multi_conn(const nbd::ExportInfo& info, size_t connections);

// Checks that the kernel can serve this export with `connections` sockets
// and fills in the connect request (sockets left empty). Refuses: several
// connections without CAN_MULTI_CONN, a server minimum block size above the
// page size, a block size the server or the kernel cannot take, a maximum
// payload below the block size.
Result<NbdConnect> plan_connect(const nbd::ExportInfo& info, size_t connections, const AttachOptions& o);

class AttachedDevice {
 public:
  // Hands the sockets to the kernel (they are the kernel's afterwards; our
  // copies are closed) and waits until the device is ready. `netlink` is an
  // already opened client to reuse (one is opened when null).
  static Result<std::unique_ptr<AttachedDevice>> attach(std::vector<KernelConnection> conns,
                                                        const AttachOptions& o,
                                                        std::unique_ptr<NbdNetlink> netlink = nullptr);
  // Does not detach a plain netlink device: it outlives its attacher by
  // design. An ioctl device cannot, nor can TLS relays: those are detached.
  ~AttachedDevice();

  uint32_t index() const { return index_; }
  std::string path() const;
  bool via_ioctl() const { return ioctl_ != nullptr; }
  // True when this process must keep running for the device to work.
  bool needs_process() const { return ioctl_ != nullptr || !relays_.empty(); }
  const NbdConnect& request() const { return request_; }

  // True while the kernel still has the device connected.
  bool connected() const;
  // Disconnects (idempotent: an already detached device is fine).
  Status detach();
  // Replaces the sockets of a device whose connections died (netlink only).
  Status reconfigure(std::vector<KernelConnection> conns);

 private:
  AttachedDevice() = default;
  uint32_t index_ = 0;
  NbdConnect request_;
  std::unique_ptr<NbdNetlink> netlink_;
  std::unique_ptr<NbdIoctlDevice> ioctl_;
  std::vector<std::shared_ptr<void>> relays_;  // TLS relays of the current sockets
};

// Detaches a device by number, whoever attached it (netlink, or ioctl when
// the kernel has no netlink family).
Status detach_device(uint32_t index);

}  // namespace memsync::kernel
