// libFuzzer target: RemoteStore (the wire protocol client) reading arbitrary
// server bytes: the HELLO reply, then replies to a READ, a WRITE and a SYNC
// in flight at once (ids 1, 2, 3...). Every length from the "server" must be
// checked before it is used; the client must fail its calls cleanly (never
// crash, never hang) when the stream is malformed or ends.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "feed_connection.hpp"
#include "wire/remote_store.hpp"

using namespace memsync;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  std::jthread server([&] {
    fuzz::feed_and_drain(sv[1], data, size);
    ::close(sv[1]);
  });
  wire::RemoteOptions o;
  o.max_payload = wire::kMinPayload;  // small, so a read is split into parts
  auto store = wire::RemoteStore::open(std::make_unique<Channel>(UniqueFd(sv[0])), o, "fuzz");
  if (store) {
    auto& s = **store;
    std::jthread writer([&] {
      std::vector<std::byte> w(4096, std::byte{0x5a});
      if (s.size() >= 8192) (void)s.write_at(w, 4096);
      (void)s.sync();
    });
    std::vector<std::byte> r(std::min<uint64_t>(s.size(), 12288));
    (void)s.read_at(r, 0);
  }
  return 0;  // the store's destructor closes the client end; the feeder ends
}
