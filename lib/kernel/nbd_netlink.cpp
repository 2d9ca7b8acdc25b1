#include "kernel/nbd_netlink.hpp"

#include <linux/nbd-netlink.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>

#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

namespace memsync::kernel {
namespace {

// libnl error codes to errno, for the cases a caller acts on.
int errno_of(int nl_err) {
  switch (-nl_err) {
    case NLE_PERM: return EPERM;
    case NLE_OBJ_NOTFOUND: return ENOENT;
    case NLE_BUSY: return EBUSY;
    case NLE_INVAL: return EINVAL;
    case NLE_NOMEM: return ENOMEM;
    case NLE_NODEV: return ENODEV;
    case NLE_OPNOTSUPP: return EOPNOTSUPP;
    default: return EIO;
  }
}

Status nl_status(int nl_err, const std::string& what) {
  int code = errno_of(nl_err);
  std::string msg = what + ": " + nl_geterror(nl_err);
  if (code == EPERM) msg += " (managing NBD devices needs root, or CAP_SYS_ADMIN)";
  return Status::error(code, msg);
}

// Keeps a copy of the first valid reply (libnl frees its buffer after).
int keep_reply(nl_msg* msg, void* arg) {
  auto* out = static_cast<std::vector<char>*>(arg);
  nlmsghdr* h = nlmsg_hdr(msg);
  if (out->empty()) out->assign(reinterpret_cast<char*>(h), reinterpret_cast<char*>(h) + h->nlmsg_len);
  return NL_OK;
}

}  // namespace

Result<std::unique_ptr<NbdNetlink>> NbdNetlink::open() {
  std::unique_ptr<NbdNetlink> n(new NbdNetlink());
  n->sock_ = nl_socket_alloc();
  if (!n->sock_) return Status::error(ENOMEM, "allocate a netlink socket");
  if (int e = genl_connect(n->sock_); e < 0) return nl_status(e, "connect to generic netlink");
  n->family_ = genl_ctrl_resolve(n->sock_, NBD_GENL_FAMILY_NAME);
  if (n->family_ < 0)
    return Status::error(ENOENT, "the kernel has no nbd netlink family: is the nbd module loaded? (modprobe nbd)");
  return n;
}

NbdNetlink::~NbdNetlink() {
  if (sock_) nl_socket_free(sock_);
}

Status NbdNetlink::transact(NlMsg msg, const std::string& what, nlmsghdr** reply_copy) {
  reply_.clear();
  // A request with a reply (CONNECT, STATUS) gets the reply, then the
  // acknowledgement, maybe in separate datagrams: read until the
  // acknowledgement (or the kernel's error), so nothing of this request is
  // left for the next one to mistake for its own answer.
  bool acked = false;
  nl_socket_modify_cb(sock_, NL_CB_VALID, NL_CB_CUSTOM, keep_reply, &reply_);
  nl_socket_modify_cb(
      sock_, NL_CB_ACK, NL_CB_CUSTOM,
      [](nl_msg*, void* arg) {
        *static_cast<bool*>(arg) = true;
        return static_cast<int>(NL_STOP);
      },
      &acked);
  int e = nl_send_auto(sock_, msg.get());
  if (e < 0) return nl_status(e, what);
  while (!acked) {
    e = nl_recvmsgs_default(sock_);
    if (e < 0) return nl_status(e, what);
  }
  if (reply_copy) *reply_copy = reply_.empty() ? nullptr : reinterpret_cast<nlmsghdr*>(reply_.data());
  return Status::ok();
}

Result<uint32_t> NbdNetlink::connect(const NbdConnect& c) {
  auto msg = build_connect(family_, c);
  if (!msg) return msg.status();
  nlmsghdr* reply = nullptr;
  MEMSYNC_TRY(transact(std::move(msg).value(), "attach the NBD device (netlink connect)", &reply));
  if (!reply) {
    if (c.index) return *c.index;
    return Status::error(EPROTO, "the kernel did not say which device it attached");
  }
  return parse_connect_reply(reply);
}

Status NbdNetlink::disconnect(uint32_t index) {
  auto msg = build_disconnect(family_, index);
  if (!msg) return msg.status();
  return transact(std::move(msg).value(), "detach the NBD device", nullptr);
}

Status NbdNetlink::reconfigure(uint32_t index, const std::vector<int>& sockets,
                               std::optional<uint64_t> dead_conn_timeout_s, const std::string& backend_identifier) {
  auto msg = build_reconfigure(family_, index, sockets, dead_conn_timeout_s, backend_identifier);
  if (!msg) return msg.status();
  return transact(std::move(msg).value(), "reconnect the NBD device", nullptr);
}

Result<std::vector<DeviceStatus>> NbdNetlink::status(std::optional<uint32_t> index) {
  auto msg = build_status(family_, index);
  if (!msg) return msg.status();
  nlmsghdr* reply = nullptr;
  MEMSYNC_TRY(transact(std::move(msg).value(), "query NBD devices", &reply));
  if (!reply) return std::vector<DeviceStatus>();
  return parse_status_reply(reply);
}

Result<std::unique_ptr<NbdLinkWatch>> NbdLinkWatch::open() {
  std::unique_ptr<NbdLinkWatch> w(new NbdLinkWatch());
  w->sock_ = nl_socket_alloc();
  if (!w->sock_) return Status::error(ENOMEM, "allocate a netlink socket");
  nl_socket_disable_seq_check(w->sock_);  // events are not answers to our requests
  if (int e = genl_connect(w->sock_); e < 0) return nl_status(e, "connect to generic netlink");
  int group = genl_ctrl_resolve_grp(w->sock_, NBD_GENL_FAMILY_NAME, NBD_GENL_MCAST_GROUP_NAME);
  if (group < 0) return nl_status(group, "find the nbd link-dead event group");
  if (int e = nl_socket_add_membership(w->sock_, group); e < 0) return nl_status(e, "join the nbd event group");
  nl_socket_modify_cb(
      w->sock_, NL_CB_VALID, NL_CB_CUSTOM,
      [](nl_msg* msg, void* arg) {
        if (auto index = parse_link_dead(nlmsg_hdr(msg))) static_cast<NbdLinkWatch*>(arg)->events_.push_back(*index);
        return static_cast<int>(NL_OK);
      },
      w.get());
  nl_socket_set_nonblocking(w->sock_);
  return w;
}

NbdLinkWatch::~NbdLinkWatch() {
  if (sock_) nl_socket_free(sock_);
}

int NbdLinkWatch::fd() const { return nl_socket_get_fd(sock_); }

Result<std::vector<uint32_t>> NbdLinkWatch::take_events() {
  for (;;) {
    int e = nl_recvmsgs_default(sock_);
    if (e == -NLE_AGAIN || e == 0) break;
    if (e < 0) return nl_status(e, "read nbd events");
  }
  return std::exchange(events_, {});
}

}  // namespace memsync::kernel
