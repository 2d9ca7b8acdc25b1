// libFuzzer target: a whole NBD connection (handshake, then transmission)
// fed with arbitrary client bytes over a socketpair, against a small mem:
// store. Covers option parsing, meta context parsing, request parsing and
// the reply paths. Nothing may crash, leak, hang or read out of bounds.
#include <cstddef>
#include <cstdint>

#include "backend/mem_store.hpp"
#include "fuzz/feed_connection.hpp"
#include "nbd/server.hpp"
#include "util/log.hpp"

using namespace memsync;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::shared_ptr<Store> store = *MemStore::create(1 << 20);
  static bool quiet = (log::set_verbosity(-1), true);
  (void)quiet;
  nbd::ServerOptions opts;
  opts.transmission.threads = 2;
  opts.export_config.max_payload = 64 * 1024;
  nbd::NbdServer server(store, opts);
  fuzz::play_session(server, data, size);
  return 0;
}
