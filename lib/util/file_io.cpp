#include "util/file_io.hpp"

#include <unistd.h>

#include <cerrno>
#include <string>

namespace memsync {

Status pwrite_all(int fd, std::span<const std::byte> buf, uint64_t offset, std::string_view what) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pwrite(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::from_errno("write " + std::string(what));
    if (n == 0) return Status::io("write " + std::string(what) + ": no progress");
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

}  // namespace memsync
