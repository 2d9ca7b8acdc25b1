#include "net/channel.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>

#include "util/file_io.hpp"

namespace memsync {
namespace {
constexpr size_t kBufferSize = 256 * 1024;
constexpr size_t kDirectRead = 64 * 1024;  // larger reads bypass the buffer
}  // namespace

Channel::Channel(UniqueFd fd) : in_(std::move(fd)) { init(); }
Channel::Channel(UniqueFd in, UniqueFd out) : in_(std::move(in)), out_(std::move(out)) { init(); }
Channel::~Channel() {
  // Close our ends first: a TLS relay in keep_alive_ exits when it sees EOF.
  in_.reset();
  out_.reset();
  keep_alive_.reset();
}

void Channel::init() {
  struct stat st{};
  in_is_socket_ = ::fstat(in_.get(), &st) == 0 && S_ISSOCK(st.st_mode);
  if (in_is_socket_) {
    int domain = 0;
    socklen_t len = sizeof domain;
    if (::getsockopt(in_.get(), SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
        (domain == AF_INET || domain == AF_INET6)) {
      int one = 1;
      // Replies are written whole with writev; Nagle would only add latency.
      ::setsockopt(in_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
  } else if (!stop_event_) {
    stop_event_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  }
  if (buf_.empty()) buf_.resize(kBufferSize);
}

Status Channel::fill() {
  for (;;) {
    if (stopped_.load()) return Status::closed("connection stopped");
    if (!in_is_socket_ || deadline_) {
      // Pipes cannot be woken by shutdown(), and deadlines need a timeout:
      // wait in poll() (with the stop event when there is one).
      int timeout = -1;
      if (deadline_) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline_ - std::chrono::steady_clock::now());
        if (left.count() <= 0) return Status::error(ETIMEDOUT, "read from connection: timed out");
        timeout = static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30));
      }
      pollfd p[2] = {{in_.get(), POLLIN, 0}, {stop_event_.get(), POLLIN, 0}};
      int n = ::poll(p, stop_event_ ? 2 : 1, timeout);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::from_errno("poll");
      }
      if (n == 0) continue;  // the deadline check above reports it
      if (stop_event_ && p[1].revents) return Status::closed("connection stopped");
    }
    size_t room = buf_.size() - end_;
    if (read_ahead_ > 0) room = std::min(room, read_ahead_);
    ssize_t n = ::read(in_.get(), buf_.data() + end_, room);
    if (n > 0) {
      end_ += static_cast<size_t>(n);
      return Status::ok();
    }
    if (n == 0) return Status::closed("connection closed by peer");
    if (errno == EINTR) continue;
    return Status::from_errno("read from connection");
  }
}

Status Channel::read_exact(std::span<std::byte> dst) {
  clean_eof_ = false;
  size_t got = 0;
  bool at_boundary = true;
  while (got < dst.size()) {
    if (begin_ < end_) {
      size_t n = std::min(end_ - begin_, dst.size() - got);
      std::memcpy(dst.data() + got, buf_.data() + begin_, n);
      begin_ += n;
      got += n;
      at_boundary = false;
      continue;
    }
    begin_ = end_ = 0;
    size_t want = dst.size() - got;
    if (want >= kDirectRead && in_is_socket_ && !deadline_ && !stopped_.load()) {
      ssize_t n = ::read(in_.get(), dst.data() + got, want);
      if (n > 0) { got += static_cast<size_t>(n); at_boundary = false; continue; }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::from_errno("read from connection");
      clean_eof_ = at_boundary;
      return Status::closed("connection closed by peer");
    }
    Status st = fill();
    if (!st) {
      clean_eof_ = at_boundary && st.is_reconnect();
      return st;
    }
  }
  return Status::ok();
}

Status Channel::skip(uint64_t n) {
  std::byte scratch[16384];
  while (n > 0) {
    size_t step = static_cast<size_t>(std::min<uint64_t>(n, sizeof scratch));
    MEMSYNC_TRY(read_exact(std::span(scratch, step)));
    n -= step;
  }
  return Status::ok();
}

Status Channel::read_to_file(int fd, uint64_t offset, uint64_t length, Status& file_error, std::byte* mapped,
                             std::mutex* file_lock) {
  file_error = Status::ok();
  // `unread` counts the payload bytes still in the stream; once a byte is
  // taken from the stream (into the buffer, the mapping or the pipe) it is
  // no longer unread, whether or not it reached the file. On a file error
  // the unread rest is read and dropped, so the stream stays in sync and the
  // caller can answer with an error.
  uint64_t unread = length;
  auto file_failed = [&](Status st) {
    file_error = std::move(st);
    return skip(unread);
  };
  auto put = [&](const std::byte* p, size_t n) -> Status {
    std::unique_lock<std::mutex> held;
    if (file_lock && n > 0) held = std::unique_lock(*file_lock);
    MEMSYNC_TRY(pwrite_all(fd, std::span(p, n), offset, "file"));
    offset += n;
    return Status::ok();
  };
  // What the buffer already holds goes first, by plain write.
  size_t have = static_cast<size_t>(std::min<uint64_t>(unread, end_ - begin_));
  begin_ += have;
  unread -= have;
  if (Status st = put(buf_.data() + begin_ - have, have); !st) return file_failed(st);
  if (mapped) mapped += have;
  while (mapped && unread > 0 && in_is_socket_ && !deadline_) {
    if (stopped_.load()) return Status::closed("connection stopped");
    ssize_t n = ::read(in_.get(), mapped, static_cast<size_t>(unread));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EFAULT) break;  // past the file's end now: splice below
    if (n < 0) return Status::from_errno("read from connection");
    if (n == 0) return Status::closed("connection closed by peer");
    mapped += n;
    offset += static_cast<uint64_t>(n);
    unread -= static_cast<uint64_t>(n);
  }
  if (splice_works_ && unread > 0 && !pipe_r_) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) == 0) {
      pipe_r_.reset(p[0]);
      pipe_w_.reset(p[1]);
      ::fcntl(p[1], F_SETPIPE_SZ, 1 << 20);  // fewer round trips; the default stays if refused
    } else {
      splice_works_ = false;
    }
  }
  while (unread > 0 && splice_works_ && !deadline_) {
    if (stopped_.load()) return Status::closed("connection stopped");
    ssize_t in = ::splice(in_.get(), nullptr, pipe_w_.get(), nullptr,
                          static_cast<size_t>(std::min<uint64_t>(unread, 1 << 20)), SPLICE_F_MOVE);
    if (in < 0 && errno == EINTR) continue;
    if (in < 0 && (errno == EINVAL || errno == ESPIPE)) {
      splice_works_ = false;  // this descriptor cannot splice: copy instead
      break;
    }
    if (in < 0) return Status::from_errno("read from connection");
    if (in == 0) return Status::closed("connection closed by peer");
    unread -= static_cast<uint64_t>(in);
    auto left = static_cast<size_t>(in);
    std::unique_lock<std::mutex> held;
    if (file_lock) held = std::unique_lock(*file_lock);
    while (left > 0) {
      auto o = static_cast<loff_t>(offset);
      ssize_t out = ::splice(pipe_r_.get(), nullptr, fd, &o, left, SPLICE_F_MOVE);
      if (out < 0 && errno == EINTR) continue;
      if (out <= 0) {
        Status st = out < 0 ? Status::from_errno("write file") : Status::io("write file: no progress");
        // Those bytes are in our pipe and must not stay there.
        std::byte scratch[16384];
        while (left > 0) {
          ssize_t r = ::read(pipe_r_.get(), scratch, std::min(left, sizeof scratch));
          if (r <= 0) break;
          left -= static_cast<size_t>(r);
        }
        return file_failed(st);
      }
      left -= static_cast<size_t>(out);
      offset += static_cast<uint64_t>(out);
    }
  }
  // Fallback: bounce through the buffer.
  while (unread > 0) {
    begin_ = end_ = 0;
    MEMSYNC_TRY(fill());
    size_t n = static_cast<size_t>(std::min<uint64_t>(unread, end_ - begin_));
    begin_ += n;
    unread -= n;
    if (Status st = put(buf_.data() + begin_ - n, n); !st) return file_failed(st);
  }
  return Status::ok();
}

Status Channel::write(std::initializer_list<std::span<const std::byte>> parts) {
  return write(std::span<const std::span<const std::byte>>(parts.begin(), parts.size()));
}

Status Channel::write(std::span<const std::span<const std::byte>> parts) {
  constexpr size_t kStackIov = 64;
  iovec stack_iov[kStackIov];
  std::vector<iovec> heap_iov;
  iovec* iov = stack_iov;
  if (parts.size() > kStackIov) {
    heap_iov.resize(parts.size());
    iov = heap_iov.data();
  }
  size_t count = 0;
  for (auto& p : parts)
    if (!p.empty()) iov[count++] = iovec{const_cast<std::byte*>(p.data()), p.size()};
  std::lock_guard lock(write_mu_);
  size_t first = 0;
  while (first < count) {
    int n_iov = static_cast<int>(std::min<size_t>(count - first, IOV_MAX));
    // sendmsg with MSG_NOSIGNAL: a peer that went away is an EPIPE here,
    // never a SIGPIPE, even in a process that did not ignore the signal.
    ssize_t n;
    if (!out_not_socket_) {
      msghdr m{};
      m.msg_iov = iov + first;
      m.msg_iovlen = static_cast<size_t>(n_iov);
      n = ::sendmsg(write_fd(), &m, MSG_NOSIGNAL);
      if (n < 0 && errno == ENOTSOCK) {
        out_not_socket_ = true;
        continue;
      }
    } else {
      n = ::writev(write_fd(), iov + first, n_iov);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("write to connection");
    }
    auto left = static_cast<size_t>(n);
    while (first < count && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (first < count) {
      iov[first].iov_base = static_cast<std::byte*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return Status::ok();
}

Status Channel::write_file(std::span<const std::byte> head, int fd, uint64_t offset, uint64_t length) {
  std::lock_guard lock(write_mu_);
  size_t done = 0;
  while (done < head.size()) {
    ssize_t n = ::write(write_fd(), head.data() + done, head.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("write to connection");
    }
    done += static_cast<size_t>(n);
  }
  auto off = static_cast<off_t>(offset);
  while (length > 0) {
    ssize_t n = ::sendfile(write_fd(), fd, &off, static_cast<size_t>(std::min<uint64_t>(length, 1 << 30)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("sendfile to connection");
    }
    if (n == 0) break;  // the file shrank under us
    length -= static_cast<uint64_t>(n);
  }
  // What the file no longer has goes out as zeros, as FileStore::read_at
  // reads it: the head promised `length` bytes, and the stream must stay
  // whole.
  static const std::array<std::byte, 65536> zeros{};
  while (length > 0) {
    size_t step = static_cast<size_t>(std::min<uint64_t>(length, zeros.size()));
    ssize_t n = ::write(write_fd(), zeros.data(), step);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("write to connection");
    }
    length -= static_cast<uint64_t>(n);
  }
  return Status::ok();
}

void Channel::stop() {
  if (stopped_.exchange(true)) return;
  if (in_is_socket_) {
    ::shutdown(in_.get(), SHUT_RD);
  } else if (stop_event_) {
    uint64_t one = 1;
    ssize_t r = ::write(stop_event_.get(), &one, sizeof one);
    (void)r;
  }
}

void Channel::set_read_deadline(unsigned ms) {
  if (ms == 0) deadline_.reset();
  else deadline_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
}

void Channel::shutdown_write() {
  std::lock_guard lock(write_mu_);
  ::shutdown(write_fd(), SHUT_WR);
}

void Channel::upgrade(UniqueFd fd, std::shared_ptr<void> keep_alive) {
  in_ = std::move(fd);
  out_.reset();
  begin_ = end_ = 0;
  keep_alive_ = std::move(keep_alive);
  init();
}

std::pair<UniqueFd, UniqueFd> Channel::release_fds() {
  return {std::move(in_), std::move(out_)};
}

}  // namespace memsync
