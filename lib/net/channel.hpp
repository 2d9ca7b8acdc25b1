// Channel: one connection's byte stream, as protocol engines see it.
//
// Wraps a readable and a writable descriptor (the same socket, or stdin and
// stdout). Reads are buffered so that many small protocol headers cost one
// system call; writes gather several spans into one writev.
//
// Thread safety: reads are NOT synchronised: one thread at a time (protocol
// engines serialise readers with their own lock). write() is synchronised:
// concurrent calls never interleave their bytes. stop() may be called from
// any thread: blocked and later reads then end with ECONNRESET ("closed").
// upgrade() replaces the descriptors (STARTTLS) and needs no other thread
// to be using the channel.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "util/fd.hpp"
#include "util/status.hpp"

namespace memsync {

class Channel {
 public:
  // One bidirectional descriptor (a socket).
  explicit Channel(UniqueFd fd);
  // Separate descriptors, e.g. stdin and stdout. `out` may be invalid when
  // `in` is also the writable end.
  Channel(UniqueFd in, UniqueFd out);
  ~Channel();

  // Fills `dst` completely. EOF before the first byte and EOF in the middle
  // both return Status::closed; is_eof() tells them apart afterwards.
  Status read_exact(std::span<std::byte> dst);
  // Reads and drops n bytes without allocating n bytes.
  Status skip(uint64_t n);
  // Reads exactly `length` bytes into regular file `fd` at `offset`. Bytes
  // not yet buffered move with splice(2) through a pipe, so they never pass
  // through user space: one copy (into the page cache) instead of two.
  // Returns the connection's status. A failed file write is reported in
  // `file_error` instead, after the rest of the payload was read and
  // dropped, so the stream stays in sync. Either failure leaves the range
  // partly written. Same threading as reads.
  // With `mapped` (a MAP_SHARED view of fd at `offset`), the socket's bytes
  // are read straight into the mapping instead: one copy, without the
  // pipe's two splice calls per chunk. Only the kernel touches the mapping
  // (read(2)), so a page the file no longer has fails with EFAULT, never
  // SIGBUS; the rest then takes the splice path, which regrows the file.
  // With `file_lock`, every write into fd holds it: several threads
  // filling one file take turns in user space instead of spinning on the
  // kernel's inode lock (tmpfs writes spin while the holder runs, and on a
  // VM whose other vCPU is descheduled that burned seconds per GiB).
  Status read_to_file(int fd, uint64_t offset, uint64_t length, Status& file_error, std::byte* mapped = nullptr,
                      std::mutex* file_lock = nullptr);
  // True when the last failed read hit a clean end of stream at a boundary.
  bool clean_eof() const { return clean_eof_; }
  // Caps how much one buffer refill reads (0: the whole buffer). A reader
  // that expects a header followed by a large payload it will take
  // directly (read_to_file, read_exact of >= 64K) sets it to the header's
  // size, so the payload is not first copied into the buffer.
  void limit_read_ahead(size_t n) { read_ahead_ = n; }
  // Bytes already buffered but not consumed.
  size_t buffered() const { return end_ - begin_; }
  // The buffered bytes themselves, for deciding whether a whole message is
  // already here (valid until the next read).
  std::span<const std::byte> peek() const { return {buf_.data() + begin_, end_ - begin_}; }

  // Writes all parts (any number), in order, atomically with respect to
  // other writers.
  Status write(std::initializer_list<std::span<const std::byte>> parts);
  Status write(std::span<const std::span<const std::byte>> parts);

  // Writes `head`, then `length` bytes of regular file `fd` from `offset`
  // (sendfile: the kernel copies page cache to socket, we never touch the
  // bytes), atomically with respect to other writers. Bytes past the
  // file's end (it shrank) go out as zeros. A failure after the head went
  // out leaves the stream broken: the caller must disconnect.
  Status write_file(std::span<const std::byte> head, int fd, uint64_t offset, uint64_t length);

  // Ends reading (blocked readers wake up) without closing descriptors.
  void stop();
  bool stopped() const { return stopped_.load(); }
  // Sends a FIN after everything written so far (sockets only).
  void shutdown_write();

  // Makes reads fail with ETIMEDOUT once `ms` milliseconds have passed from
  // now, however the data trickles in (0 = no deadline). Bounds handshakes.
  void set_read_deadline(unsigned ms);

  int write_fd() const { return out_.valid() ? out_.get() : in_.get(); }

  // Replaces both descriptors by one socket (STARTTLS hands the plaintext
  // end of its relay here) and keeps `keep_alive` until the channel dies.
  // REQUIRES: buffered() == 0 and no concurrent use.
  void upgrade(UniqueFd fd, std::shared_ptr<void> keep_alive);
  // What upgrade() keeps alive (a TLS relay), for callers that take the
  // descriptor away with release_fds() and must keep its relay running.
  std::shared_ptr<void> keep_alive() const { return keep_alive_; }
  // Gives up the raw descriptors (for a TLS handshake on them).
  std::pair<UniqueFd, UniqueFd> release_fds();

 private:
  Status fill();
  void init();

  UniqueFd in_, out_;
  bool in_is_socket_ = false;
  UniqueFd stop_event_;  // for non-socket inputs, where shutdown() cannot wake readers
  std::atomic<bool> stopped_{false};
  std::vector<std::byte> buf_;
  size_t begin_ = 0, end_ = 0;
  bool clean_eof_ = false;
  size_t read_ahead_ = 0;
  bool out_not_socket_ = false;  // guarded by write_mu_: use writev, not sendmsg
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  UniqueFd pipe_r_, pipe_w_;  // read_to_file's splice pipe, made on first use
  bool splice_works_ = true;
  std::mutex write_mu_;
  std::shared_ptr<void> keep_alive_;
};

}  // namespace memsync
