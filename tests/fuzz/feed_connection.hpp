// For fuzz targets that play a whole client connection: sends `data` on fd
// while draining whatever the server answers, then closes the sending side
// and drains until the server closes or goes quiet for a second.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <thread>

#include "net/channel.hpp"

namespace memsync::fuzz {

inline void feed_and_drain(int fd, const uint8_t* data, size_t size) {
  size_t sent = 0;
  char sink[65536];
  bool open = true;
  if (size == 0) ::shutdown(fd, SHUT_WR);
  while (open) {
    pollfd p{fd, static_cast<short>(POLLIN | (sent < size ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, 1000) <= 0) break;
    if (p.revents & POLLIN) {
      if (::recv(fd, sink, sizeof sink, 0) <= 0) open = false;
    }
    if (open && sent < size && (p.revents & POLLOUT)) {
      ssize_t n = ::send(fd, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) sent += static_cast<size_t>(n);
      if (sent == size) ::shutdown(fd, SHUT_WR);
    }
  }
}

// Serves one connection with server.serve() on a thread, plays `data` as
// the client, then stops the server and waits for it.
template <class Server>
void play_session(Server& server, const uint8_t* data, size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  std::jthread srv([&] {
    Channel ch{UniqueFd(sv[1])};
    (void)server.serve(ch);
  });
  feed_and_drain(sv[0], data, size);
  server.stop();
  srv.join();
  ::close(sv[0]);
}

}  // namespace memsync::fuzz
