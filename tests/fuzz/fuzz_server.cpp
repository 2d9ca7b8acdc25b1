// libFuzzer target: a whole NBD connection (handshake, then transmission)
// fed with arbitrary client bytes over a socketpair, against a small mem:
// store. Covers option parsing, meta context parsing, request parsing and
// the reply paths. Nothing may crash, leak, hang or read out of bounds.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <thread>

#include "backend/mem_store.hpp"
#include "fuzz/feed_connection.hpp"
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
  fuzz::feed_and_drain(sv[0], data, size);
  server.stop();
  srv.join();
  ::close(sv[0]);
  return 0;
}
