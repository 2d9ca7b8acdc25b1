// nbd-netlink-attach: a test helper (not a tool) that exercises the library
// pieces nbd-attach will be made of, against the real kernel in the VM:
//
//   nbd-netlink-attach ENDPOINT [EXPORT]   handshake, netlink CONNECT, print /dev/nbdN
//   nbd-netlink-attach --status            print "N connected|disconnected" per device
//   nbd-netlink-attach --disconnect N      netlink DISCONNECT
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernel/nbd_netlink.hpp"
#include "nbd/client_handshake.hpp"
#include "net/channel.hpp"
#include "net/endpoint.hpp"

using namespace memsync;

static int die(const Status& st) {
  std::fprintf(stderr, "nbd-netlink-attach: %s\n", st.message().c_str());
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: nbd-netlink-attach ENDPOINT [EXPORT] | --status | --disconnect N\n");
    return 2;
  }
  auto nl = kernel::NbdNetlink::open();
  if (!nl) return die(nl.status());
  std::string arg = argv[1];
  if (arg == "--status") {
    auto devs = (*nl)->status();
    if (!devs) return die(devs.status());
    for (auto& d : *devs) std::printf("%u %s\n", d.index, d.connected ? "connected" : "disconnected");
    return 0;
  }
  if (arg == "--disconnect" && argc == 3) {
    Status st = (*nl)->disconnect(static_cast<uint32_t>(std::atoi(argv[2])));
    return st ? 0 : die(st);
  }
  auto ep = parse_endpoint(arg);
  if (!ep) return die(ep.status());
  auto fd = connect_endpoint(*ep);
  if (!fd) return die(fd.status());
  int sock = fd->get();
  Channel ch(std::move(fd).value());
  auto info = nbd::client_handshake(ch, argc > 2 ? argv[2] : "");
  if (!info) return die(info.status());
  kernel::NbdConnect c;
  c.size_bytes = info->size;
  c.block_size = std::max<uint64_t>(512, info->min_block);
  c.server_flags = info->transmission_flags;
  c.timeout_s = 30;
  c.sockets = {sock};
  c.backend_identifier = "memsync-test:" + arg;
  auto index = (*nl)->connect(c);
  if (!index) return die(index.status());
  std::printf("/dev/nbd%u\n", *index);
  return 0;  // the kernel holds its own reference to the socket
}
