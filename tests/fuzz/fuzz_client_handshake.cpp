// libFuzzer target: the client handshake reading arbitrary server bytes
// (greeting, option replies, INFO payloads, the EXPORT_NAME reply). It must
// fail cleanly, never allocate from an unchecked length, never crash.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <thread>

#include "nbd/client_handshake.hpp"

using namespace memsync;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  // The "server" writes the input and closes; the client's own writes are
  // drained so it never blocks.
  std::jthread server([&] {
    size_t sent = 0;
    while (sent < size) {
      ssize_t n = ::send(sv[1], data + sent, size - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    ::shutdown(sv[1], SHUT_WR);
    char sink[4096];
    while (::recv(sv[1], sink, sizeof sink, 0) > 0) {}
    ::close(sv[1]);
  });
  {
    Channel ch{UniqueFd(sv[0])};
    (void)nbd::client_handshake(ch, "fuzz");
  }  // closing the client end lets the server thread finish draining
  return 0;
}
