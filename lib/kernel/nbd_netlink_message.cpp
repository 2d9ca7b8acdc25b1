#include "kernel/nbd_netlink_message.hpp"

#include <linux/nbd-netlink.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>

namespace memsync::kernel {
namespace {

Result<NlMsg> start(int family, uint8_t cmd) {
  if (family <= 0) return Status::invalid("the nbd netlink family is not resolved");
  NlMsg m(nlmsg_alloc());
  if (!m) return Status::error(ENOMEM, "allocate a netlink message");
  if (!genlmsg_put(m.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, 0, cmd, NBD_GENL_VERSION))
    return Status::error(ENOMEM, "netlink message header");
  return m;
}

Status put_sockets(nl_msg* m, const std::vector<int>& sockets) {
  nlattr* list = nla_nest_start(m, NBD_ATTR_SOCKETS);
  if (!list) return Status::error(EMSGSIZE, "netlink message too small for the socket list");
  for (int fd : sockets) {
    nlattr* item = nla_nest_start(m, NBD_SOCK_ITEM);
    if (!item || nla_put_u32(m, NBD_SOCK_FD, static_cast<uint32_t>(fd)) < 0)
      return Status::error(EMSGSIZE, "netlink message too small for the socket list");
    nla_nest_end(m, item);
  }
  nla_nest_end(m, list);
  return Status::ok();
}

Status overflow() { return Status::error(EMSGSIZE, "netlink message too small"); }

}  // namespace

void NlMsgDeleter::operator()(nl_msg* m) const { nlmsg_free(m); }

nlmsghdr* header_of(nl_msg* m) { return nlmsg_hdr(m); }

Result<NlMsg> build_connect(int family, const NbdConnect& c) {
  if (c.sockets.empty()) return Status::invalid("NBD connect needs at least one socket");
  if (c.block_size < 512 || (c.block_size & (c.block_size - 1)))
    return Status::invalid("block size " + std::to_string(c.block_size) + " is not a power of two of at least 512");
  auto m = start(family, NBD_CMD_CONNECT);
  if (!m) return m;
  nl_msg* msg = m->get();
  if (c.index && nla_put_u32(msg, NBD_ATTR_INDEX, *c.index) < 0) return overflow();
  if (nla_put_u64(msg, NBD_ATTR_SIZE_BYTES, c.size_bytes) < 0) return overflow();
  if (nla_put_u64(msg, NBD_ATTR_BLOCK_SIZE_BYTES, c.block_size) < 0) return overflow();
  if (c.timeout_s && nla_put_u64(msg, NBD_ATTR_TIMEOUT, *c.timeout_s) < 0) return overflow();
  if (nla_put_u64(msg, NBD_ATTR_SERVER_FLAGS, c.server_flags) < 0) return overflow();
  if (c.client_flags && nla_put_u64(msg, NBD_ATTR_CLIENT_FLAGS, c.client_flags) < 0) return overflow();
  if (c.dead_conn_timeout_s && nla_put_u64(msg, NBD_ATTR_DEAD_CONN_TIMEOUT, *c.dead_conn_timeout_s) < 0)
    return overflow();
  if (!c.backend_identifier.empty() && nla_put_string(msg, NBD_ATTR_BACKEND_IDENTIFIER, c.backend_identifier.c_str()) < 0)
    return overflow();
  MEMSYNC_TRY(put_sockets(msg, c.sockets));
  return m;
}

Result<NlMsg> build_disconnect(int family, uint32_t index) {
  auto m = start(family, NBD_CMD_DISCONNECT);
  if (!m) return m;
  if (nla_put_u32(m->get(), NBD_ATTR_INDEX, index) < 0) return overflow();
  return m;
}

Result<NlMsg> build_reconfigure(int family, uint32_t index, const std::vector<int>& sockets,
                                std::optional<uint64_t> dead_conn_timeout_s, const std::string& backend_identifier) {
  auto m = start(family, NBD_CMD_RECONFIGURE);
  if (!m) return m;
  if (nla_put_u32(m->get(), NBD_ATTR_INDEX, index) < 0) return overflow();
  // A device connected with an identifier takes new sockets only for the
  // same backend (the kernel says "must specify backend" otherwise).
  if (!backend_identifier.empty() &&
      nla_put_string(m->get(), NBD_ATTR_BACKEND_IDENTIFIER, backend_identifier.c_str()) < 0)
    return overflow();
  if (dead_conn_timeout_s && nla_put_u64(m->get(), NBD_ATTR_DEAD_CONN_TIMEOUT, *dead_conn_timeout_s) < 0)
    return overflow();
  if (!sockets.empty()) MEMSYNC_TRY(put_sockets(m->get(), sockets));
  return m;
}

Result<NlMsg> build_status(int family, std::optional<uint32_t> index) {
  auto m = start(family, NBD_CMD_STATUS);
  if (!m) return m;
  if (index && nla_put_u32(m->get(), NBD_ATTR_INDEX, *index) < 0) return overflow();
  return m;
}

Result<std::vector<DeviceStatus>> parse_status_reply(nlmsghdr* reply) {
  nlattr* attrs[NBD_ATTR_MAX + 1] = {};
  if (genlmsg_parse(reply, 0, attrs, NBD_ATTR_MAX, nullptr) < 0) return Status::error(EPROTO, "malformed NBD status reply");
  std::vector<DeviceStatus> out;
  if (!attrs[NBD_ATTR_DEVICE_LIST]) return out;
  nlattr* item;
  int rem;
  nla_for_each_nested(item, attrs[NBD_ATTR_DEVICE_LIST], rem) {
    if (nla_type(item) != NBD_DEVICE_ITEM) continue;
    nlattr* dev[NBD_DEVICE_ATTR_MAX + 1] = {};
    if (nla_parse_nested(dev, NBD_DEVICE_ATTR_MAX, item, nullptr) < 0 || !dev[NBD_DEVICE_INDEX])
      return Status::error(EPROTO, "malformed NBD device item");
    DeviceStatus d;
    d.index = nla_get_u32(dev[NBD_DEVICE_INDEX]);
    d.connected = dev[NBD_DEVICE_CONNECTED] && nla_get_u8(dev[NBD_DEVICE_CONNECTED]);
    out.push_back(d);
  }
  return out;
}

Result<uint32_t> parse_connect_reply(nlmsghdr* reply) {
  nlattr* attrs[NBD_ATTR_MAX + 1] = {};
  if (genlmsg_parse(reply, 0, attrs, NBD_ATTR_MAX, nullptr) < 0 || !attrs[NBD_ATTR_INDEX])
    return Status::error(EPROTO, "NBD connect reply without a device index");
  return nla_get_u32(attrs[NBD_ATTR_INDEX]);
}

std::optional<uint32_t> parse_link_dead(nlmsghdr* event) {
  auto* gh = static_cast<genlmsghdr*>(nlmsg_data(event));
  if (event->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN || gh->cmd != NBD_CMD_LINK_DEAD) return std::nullopt;
  nlattr* attrs[NBD_ATTR_MAX + 1] = {};
  if (genlmsg_parse(event, 0, attrs, NBD_ATTR_MAX, nullptr) < 0 || !attrs[NBD_ATTR_INDEX]) return std::nullopt;
  return nla_get_u32(attrs[NBD_ATTR_INDEX]);
}

}  // namespace memsync::kernel
