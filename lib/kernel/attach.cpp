#include "kernel/attach.hpp"

#include <unistd.h>

#include "kernel/nbd_device.hpp"
#include "nbd/protocol.hpp"
#include "net/channel.hpp"
#include "util/log.hpp"
#include "util/units.hpp"

namespace memsync::kernel {
namespace {

constexpr std::chrono::seconds kReadyLimit{10};

uint32_t page_size() { return static_cast<uint32_t>(::sysconf(_SC_PAGESIZE)); }

bool power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

Result<KernelConnection> handshake_for_kernel(UniqueFd sock, const std::string& export_name,
                                              const TlsClientContext* tls, std::chrono::milliseconds limit) {
  Channel ch(std::move(sock));
  ch.set_read_deadline(static_cast<unsigned>(limit.count()));
  auto info = nbd::client_handshake(ch, export_name, tls);
  if (!info) return info.status();
  if (ch.buffered() != 0) return Status::error(EPROTO, "the server sent data after the handshake");
  ch.set_read_deadline(0);
  // The kernel gets the socket (with TLS: the relay's plaintext end).
  auto [in, out] = ch.release_fds();
  return KernelConnection{std::move(in), *info, ch.keep_alive()};
}

Status check_multi_conn(const nbd::ExportInfo& info, size_t connections) {
  if (connections > 1 && !(info.transmission_flags & nbd::kFlagCanMultiConn))
    return Status::error(EOPNOTSUPP, "the server does not allow several connections to this export "
                                     "(no CAN_MULTI_CONN): use one connection");
  return Status::ok();
}

Result<NbdConnect> plan_connect(const nbd::ExportInfo& info, size_t connections, const AttachOptions& o) {
  const uint32_t page = page_size();
  if (connections == 0) return Status::invalid("no connection to attach");
  MEMSYNC_TRY(check_multi_conn(info, connections));
  if (info.min_block > page)
    return Status::error(EOPNOTSUPP, "the server needs requests of at least " + format_size(info.min_block) +
                                         ", but the kernel's block size is at most the page size (" +
                                         format_size(page) + ")");
  uint32_t bs = o.block_size ? o.block_size : std::max<uint32_t>(512, info.min_block);
  if (!power_of_two(bs) || bs < 512 || bs > page)
    return Status::invalid("block size " + std::to_string(bs) + ": the kernel takes a power of two from 512 to " +
                           std::to_string(page));
  if (bs < info.min_block)
    return Status::invalid("block size " + format_size(bs) + " is below the server's minimum of " +
                           format_size(info.min_block));
  if (info.max_payload < page)
    return Status::error(EOPNOTSUPP, "the server's largest request (" + format_size(info.max_payload) +
                                         ") is below the page size the kernel sends (" + format_size(page) + ")");
  if (info.size % bs != 0)
    log::warn("the export's size " + std::to_string(info.size) + " is not a multiple of the block size " +
              std::to_string(bs) + ": its last " + std::to_string(info.size % bs) + " bytes are out of reach");
  NbdConnect c;
  c.index = o.index;
  c.size_bytes = info.size;
  c.block_size = bs;
  c.timeout_s = o.timeout_s;
  c.server_flags = info.transmission_flags | nbd::kFlagHasFlags;
  if (o.read_only) c.server_flags |= nbd::kFlagReadOnly;
  c.dead_conn_timeout_s = o.dead_conn_timeout_s;
  c.backend_identifier = o.backend_identifier;
  return c;
}

Result<std::unique_ptr<AttachedDevice>> AttachedDevice::attach(std::vector<KernelConnection> conns,
                                                               const AttachOptions& o,
                                                               std::unique_ptr<NbdNetlink> netlink) {
  if (conns.empty()) return Status::invalid("no connection to attach");
  auto plan = plan_connect(conns.front().info, conns.size(), o);
  if (!plan) return plan.status();
  std::unique_ptr<AttachedDevice> d(new AttachedDevice());
  d->request_ = *plan;
  for (auto& c : conns) {
    d->request_.sockets.push_back(c.socket.get());
    if (c.tls_relay) d->relays_.push_back(c.tls_relay);
  }

  bool use_ioctl = o.use_ioctl;
  if (!use_ioctl && netlink) {
    d->netlink_ = std::move(netlink);
  } else if (!use_ioctl) {
    auto nl = NbdNetlink::open();
    if (nl) {
      d->netlink_ = std::move(nl).value();
    } else if (nl.status().code() == ENOENT && nbd_module_loaded()) {
      log::info("the kernel has no nbd netlink family; attaching through ioctl");
      use_ioctl = true;
    } else {
      return nl.status();
    }
  }
  if (use_ioctl) {
    if (!d->request_.index) {
      auto free = find_free_device();
      if (!free) return free.status();
      d->request_.index = *free;
    }
    auto dev = NbdIoctlDevice::attach(d->request_);
    if (!dev) return dev.status().with_context("attach " + device_path(*d->request_.index));
    d->ioctl_ = std::move(dev).value();
    d->index_ = *d->request_.index;
  } else {
    auto index = d->netlink_->connect(d->request_);
    if (!index) {
      Status st = index.status();
      if (st.code() == EBUSY && o.index) return Status::error(EBUSY, device_path(*o.index) + " is already in use");
      if (st.code() == EINVAL && !o.index)
        return Status::error(st.code(), st.message() + " (no free NBD device? modprobe nbd nbds_max=N)");
      return st;
    }
    d->index_ = *index;
  }
  const uint64_t max_payload = conns.front().info.max_payload;
  conns.clear();  // the kernel holds its own references now

  // From here on a failure must not leave the device attached.
  auto undo = [&](Status st) -> Status {
    Status off = d->detach();
    if (!off) log::warn(off.message());
    return st;
  };
  // The kernel would otherwise send requests up to its own limit (32M),
  // which a server with a smaller maximum payload must refuse.
  auto limit = limit_request_size(d->index_, max_payload);
  if (!limit) return undo(limit.status());
  log::info(d->path() + ": requests of at most " + format_size(*limit));
  Status ready = wait_until_ready(d->index_, d->request_.size_bytes & ~uint64_t{511}, kReadyLimit);
  if (!ready) return undo(ready);
  return d;
}

AttachedDevice::~AttachedDevice() {
  // A relay ends only when the kernel lets go of its socket; an ioctl
  // device detaches in its own destructor.
  if (!relays_.empty()) {
    Status st = detach();
    if (!st) log::warn(st.message());
  }
}

std::string AttachedDevice::path() const { return device_path(index_); }

bool AttachedDevice::connected() const {
  if (ioctl_) return !ioctl_->finished();
  auto info = read_device_info(index_);
  return info && info->connected;
}

Status AttachedDevice::detach() {
  if (ioctl_) return ioctl_->disconnect();
  if (!connected()) return Status::ok();
  return netlink_->disconnect(index_);
}

Status AttachedDevice::reconfigure(std::vector<KernelConnection> conns) {
  if (!netlink_) return Status::unsupported("reconnecting needs the netlink interface");
  std::vector<int> fds;
  std::vector<std::shared_ptr<void>> relays;
  for (auto& c : conns) {
    fds.push_back(c.socket.get());
    if (c.tls_relay) relays.push_back(c.tls_relay);
  }
  MEMSYNC_TRY(netlink_->reconfigure(index_, fds, request_.dead_conn_timeout_s, request_.backend_identifier));
  relays_ = std::move(relays);  // the old relays end with their dead sockets
  return Status::ok();
}

Status detach_device(uint32_t index) {
  auto info = read_device_info(index);
  if (!info) return info.status();
  auto nl = NbdNetlink::open();
  if (!nl) {
    if (nl.status().code() == ENOENT && nbd_module_loaded()) return ioctl_disconnect(index);
    return nl.status();
  }
  if (!info->connected) return Status::error(ENOTCONN, device_path(index) + " is not attached");
  Status st = (*nl)->disconnect(index);
  // A device attached by ioctl is not known to netlink: fall back.
  if (!st && st.code() == EINVAL) return ioctl_disconnect(index);
  return st;
}

}  // namespace memsync::kernel
