// For fuzz targets that play a whole client connection: sends `data` on fd
// while draining whatever the server answers, then closes the sending side
// and drains until the server closes or goes quiet for a second.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

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

}  // namespace memsync::fuzz
