// Messages of the kernel's "nbd" generic-netlink family (linux/nbd-netlink.h),
// built and parsed without talking to the kernel, so that they can be unit
// tested here (our machines have no nbd module). Sending them, resolving the
// family id and listening for the link-dead multicast group is the job of
// the netlink client (a later piece, behind the same narrow seam).
//
// Attribute types follow the kernel's nbd_attr_policy: INDEX u32; SIZE_BYTES,
// BLOCK_SIZE_BYTES, TIMEOUT, SERVER_FLAGS, CLIENT_FLAGS, DEAD_CONN_TIMEOUT
// u64; BACKEND_IDENTIFIER string; SOCKETS nested SOCK_ITEM { SOCK_FD u32 };
// STATUS replies carry DEVICE_LIST { DEVICE_ITEM { DEVICE_INDEX u32,
// DEVICE_CONNECTED u8 } }.
// Thread safety: pure functions; a built message is owned by the caller.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "util/status.hpp"

struct nl_msg;
struct nlmsghdr;

namespace memsync::kernel {

struct NlMsgDeleter {
  void operator()(nl_msg* m) const;
};
using NlMsg = std::unique_ptr<nl_msg, NlMsgDeleter>;

struct NbdConnect {
  std::optional<uint32_t> index;            // a given /dev/nbdN, or let the kernel pick
  uint64_t size_bytes = 0;
  uint64_t block_size = 512;                // logical block size, a power of two 512..page size
  std::optional<uint64_t> timeout_s;        // per-request timeout
  uint64_t server_flags = 0;                // transmission flags from the handshake
  uint64_t client_flags = 0;                // NBD_CFLAG_* (e.g. destroy on disconnect)
  std::optional<uint64_t> dead_conn_timeout_s;  // queue I/O this long for a reconnect
  std::vector<int> sockets;                 // connected sockets, one per connection
  std::string backend_identifier;           // shown in /sys/block/nbdN/backend
};

// REQUIRES: family > 0 (the resolved id of "nbd").
Result<NlMsg> build_connect(int family, const NbdConnect& c);
Result<NlMsg> build_disconnect(int family, uint32_t index);
// Replaces a dead connection's sockets (reconnect without remounting).
Result<NlMsg> build_reconfigure(int family, uint32_t index, const std::vector<int>& sockets,
                                std::optional<uint64_t> dead_conn_timeout_s,
                                const std::string& backend_identifier);
// All devices when index is empty.
Result<NlMsg> build_status(int family, std::optional<uint32_t> index);

struct DeviceStatus {
  uint32_t index = 0;
  bool connected = false;
};
Result<std::vector<DeviceStatus>> parse_status_reply(nlmsghdr* reply);
// The device index in a CONNECT reply.
Result<uint32_t> parse_connect_reply(nlmsghdr* reply);

// The device index of a link-dead event (multicast group "nbd_mc_group"),
// or nullopt for any other message.
std::optional<uint32_t> parse_link_dead(nlmsghdr* event);

// Access to a built message's header, for tests and the sender.
nlmsghdr* header_of(nl_msg* m);

}  // namespace memsync::kernel
