// libFuzzer target: a whole memsync wire protocol connection (HELLO, then
// requests) fed with arbitrary client bytes over a socketpair, against a
// small mem: store. Nothing may crash, leak, hang or read out of bounds.
#include <cstddef>
#include <cstdint>

#include "backend/mem_store.hpp"
#include "fuzz/feed_connection.hpp"
#include "util/log.hpp"
#include "wire/server.hpp"

using namespace memsync;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::shared_ptr<Store> store = *MemStore::create(1 << 20);
  static bool quiet = (log::set_verbosity(-1), true);
  (void)quiet;
  wire::WireServerOptions opts;
  opts.threads = 2;
  opts.max_payload = 64 * 1024;
  opts.max_inflight = 8;
  wire::WireServer server(store, opts);
  fuzz::play_session(server, data, size);
  return 0;
}
