// The nbd generic-netlink messages, decoded back with libnl's own parser
// and the attribute types the kernel's policy demands (a wrong type or
// nesting makes the kernel refuse the message: here it fails the test).
#include <gtest/gtest.h>
#include <linux/nbd-netlink.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>

#include "kernel/nbd_netlink_message.hpp"

using namespace memsync;
using namespace memsync::kernel;

namespace {

// The kernel's policy for the attributes we send (drivers/block/nbd.c).
nla_policy attr_policy[NBD_ATTR_MAX + 1];
nla_policy sock_policy[NBD_SOCK_MAX + 1];

void init_policies() {
  attr_policy[NBD_ATTR_INDEX].type = NLA_U32;
  attr_policy[NBD_ATTR_SIZE_BYTES].type = NLA_U64;
  attr_policy[NBD_ATTR_BLOCK_SIZE_BYTES].type = NLA_U64;
  attr_policy[NBD_ATTR_TIMEOUT].type = NLA_U64;
  attr_policy[NBD_ATTR_SERVER_FLAGS].type = NLA_U64;
  attr_policy[NBD_ATTR_CLIENT_FLAGS].type = NLA_U64;
  attr_policy[NBD_ATTR_SOCKETS].type = NLA_NESTED;
  attr_policy[NBD_ATTR_DEAD_CONN_TIMEOUT].type = NLA_U64;
  attr_policy[NBD_ATTR_BACKEND_IDENTIFIER].type = NLA_STRING;
  sock_policy[NBD_SOCK_FD].type = NLA_U32;
}

TEST(NbdNetlink, ConnectCarriesEverythingWithTheKernelsTypes) {
  init_policies();
  NbdConnect c;
  c.index = 3;
  c.size_bytes = 1ULL << 30;
  c.block_size = 4096;
  c.timeout_s = 30;
  c.server_flags = 0x1ff;
  c.dead_conn_timeout_s = 120;
  c.sockets = {7, 8, 9, 10};
  c.backend_identifier = "memsync:test";
  auto m = build_connect(42, c);
  ASSERT_TRUE(m) << m.status().message();
  nlmsghdr* h = header_of(m->get());
  EXPECT_EQ(h->nlmsg_type, 42);
  auto* g = static_cast<genlmsghdr*>(nlmsg_data(h));
  EXPECT_EQ(g->cmd, NBD_CMD_CONNECT);
  EXPECT_EQ(g->version, NBD_GENL_VERSION);
  nlattr* a[NBD_ATTR_MAX + 1] = {};
  ASSERT_EQ(genlmsg_parse(h, 0, a, NBD_ATTR_MAX, attr_policy), 0);
  EXPECT_EQ(nla_get_u32(a[NBD_ATTR_INDEX]), 3u);
  EXPECT_EQ(nla_get_u64(a[NBD_ATTR_SIZE_BYTES]), 1ULL << 30);
  EXPECT_EQ(nla_get_u64(a[NBD_ATTR_BLOCK_SIZE_BYTES]), 4096u);
  EXPECT_EQ(nla_get_u64(a[NBD_ATTR_TIMEOUT]), 30u);
  EXPECT_EQ(nla_get_u64(a[NBD_ATTR_SERVER_FLAGS]), 0x1ffu);
  EXPECT_EQ(nla_get_u64(a[NBD_ATTR_DEAD_CONN_TIMEOUT]), 120u);
  EXPECT_STREQ(nla_get_string(a[NBD_ATTR_BACKEND_IDENTIFIER]), "memsync:test");
  EXPECT_EQ(a[NBD_ATTR_CLIENT_FLAGS], nullptr);  // zero flags are not sent
  std::vector<int> fds;
  nlattr* item;
  int rem;
  nla_for_each_nested(item, a[NBD_ATTR_SOCKETS], rem) {
    EXPECT_EQ(nla_type(item), NBD_SOCK_ITEM);
    nlattr* s[NBD_SOCK_MAX + 1] = {};
    ASSERT_EQ(nla_parse_nested(s, NBD_SOCK_MAX, item, sock_policy), 0);
    fds.push_back(static_cast<int>(nla_get_u32(s[NBD_SOCK_FD])));
  }
  EXPECT_EQ(fds, c.sockets);
}

TEST(NbdNetlink, ConnectRefusesWhatTheKernelWould) {
  NbdConnect c;
  c.size_bytes = 1 << 20;
  EXPECT_FALSE(build_connect(42, c));  // no socket
  c.sockets = {3};
  c.block_size = 1000;
  EXPECT_FALSE(build_connect(42, c));  // not a power of two
  c.block_size = 512;
  EXPECT_FALSE(build_connect(0, c));  // family not resolved
  EXPECT_TRUE(build_connect(42, c));
}

TEST(NbdNetlink, DisconnectReconfigureStatus) {
  init_policies();
  auto d = build_disconnect(42, 5);
  ASSERT_TRUE(d);
  nlattr* a[NBD_ATTR_MAX + 1] = {};
  ASSERT_EQ(genlmsg_parse(header_of(d->get()), 0, a, NBD_ATTR_MAX, attr_policy), 0);
  EXPECT_EQ(nla_get_u32(a[NBD_ATTR_INDEX]), 5u);
  auto r = build_reconfigure(42, 5, {11}, 60, "memsync:x");
  ASSERT_TRUE(r);
  ASSERT_EQ(genlmsg_parse(header_of(r->get()), 0, a, NBD_ATTR_MAX, attr_policy), 0);
  EXPECT_EQ(static_cast<genlmsghdr*>(nlmsg_data(header_of(r->get())))->cmd, NBD_CMD_RECONFIGURE);
  EXPECT_NE(a[NBD_ATTR_SOCKETS], nullptr);
  EXPECT_EQ(nla_get_u64(a[NBD_ATTR_DEAD_CONN_TIMEOUT]), 60u);
  // The kernel refuses new sockets without the identifier given at connect.
  ASSERT_NE(a[NBD_ATTR_BACKEND_IDENTIFIER], nullptr);
  EXPECT_STREQ(nla_get_string(a[NBD_ATTR_BACKEND_IDENTIFIER]), "memsync:x");
  auto s = build_status(42, std::nullopt);
  ASSERT_TRUE(s);
  nlattr* b[NBD_ATTR_MAX + 1] = {};
  ASSERT_EQ(genlmsg_parse(header_of(s->get()), 0, b, NBD_ATTR_MAX, attr_policy), 0);
  EXPECT_EQ(b[NBD_ATTR_INDEX], nullptr);
}

TEST(NbdNetlink, StatusReplyIsParsed) {
  // A reply laid out as the kernel's nbd_genl_status() builds it.
  NlMsg m(nlmsg_alloc());
  genlmsg_put(m.get(), 0, 0, 42, 0, 0, NBD_CMD_STATUS, NBD_GENL_VERSION);
  nlattr* list = nla_nest_start(m.get(), NBD_ATTR_DEVICE_LIST);
  for (uint32_t i = 0; i < 3; ++i) {
    nlattr* item = nla_nest_start(m.get(), NBD_DEVICE_ITEM);
    nla_put_u32(m.get(), NBD_DEVICE_INDEX, i);
    nla_put_u8(m.get(), NBD_DEVICE_CONNECTED, i == 1);
    nla_nest_end(m.get(), item);
  }
  nla_nest_end(m.get(), list);
  auto devs = parse_status_reply(header_of(m.get()));
  ASSERT_TRUE(devs) << devs.status().message();
  ASSERT_EQ(devs->size(), 3u);
  EXPECT_FALSE((*devs)[0].connected);
  EXPECT_TRUE((*devs)[1].connected);
  EXPECT_EQ((*devs)[2].index, 2u);
  EXPECT_FALSE(parse_connect_reply(header_of(m.get())));  // no index in it
}

TEST(NbdNetlink, LinkDeadEventIsRecognised) {
  // As the kernel's nbd_mark_nsock_dead() multicasts it.
  NlMsg m(nlmsg_alloc());
  genlmsg_put(m.get(), 0, 0, 42, 0, 0, NBD_CMD_LINK_DEAD, NBD_GENL_VERSION);
  nla_put_u32(m.get(), NBD_ATTR_INDEX, 5);
  auto index = parse_link_dead(header_of(m.get()));
  ASSERT_TRUE(index);
  EXPECT_EQ(*index, 5u);
  NlMsg other(nlmsg_alloc());
  genlmsg_put(other.get(), 0, 0, 42, 0, 0, NBD_CMD_STATUS, NBD_GENL_VERSION);
  nla_put_u32(other.get(), NBD_ATTR_INDEX, 5);
  EXPECT_FALSE(parse_link_dead(header_of(other.get())));
  NlMsg no_index(nlmsg_alloc());
  genlmsg_put(no_index.get(), 0, 0, 42, 0, 0, NBD_CMD_LINK_DEAD, NBD_GENL_VERSION);
  EXPECT_FALSE(parse_link_dead(header_of(no_index.get())));
}

}  // namespace
