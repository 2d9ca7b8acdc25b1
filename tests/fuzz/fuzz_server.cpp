// libFuzzer target: a whole NBD connection (handshake, then transmission)
// fed with arbitrary client bytes over a socketpair, against a small mem:
// store. Covers option parsing, meta context parsing, request parsing and
// the reply paths. Nothing may crash, leak, hang or read out of bounds.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <thread>

#include "backend/mem_store.hpp"
#include "nbd/server.hpp"
#include "util/log.hpp"

using namespace memsync;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::shared_ptr<Store> store = *MemStore::create(1 << 20);
  static bool quiet = (log::set_verbosity(-1), true);
  (void)quiet;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  nbd::ServerOptions opts;
  opts.transmission.threads = 2;
  opts.export_config.max_payload = 64 * 1024;
  nbd::NbdServer server(store, opts);
  std::jthread srv([&] {
    Channel ch{UniqueFd(sv[1])};
    (void)server.serve(ch);
  });
  // Feed the input while draining replies, then close our side.
  size_t sent = 0;
  char sink[65536];
  bool open = true;
  while (open) {
    pollfd p{sv[0], static_cast<short>(POLLIN | (sent < size ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, 1000) <= 0) break;
    if (p.revents & POLLIN) {
      if (::recv(sv[0], sink, sizeof sink, 0) <= 0) open = false;
    }
    if (open && sent < size && (p.revents & POLLOUT)) {
      ssize_t n = ::send(sv[0], data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) sent += static_cast<size_t>(n);
      if (sent == size) ::shutdown(sv[0], SHUT_WR);
    }
    if (size == 0 && sent == 0) { ::shutdown(sv[0], SHUT_WR); sent = 1; }
  }
  server.stop();
  srv.join();
  ::close(sv[0]);
  return 0;
}
