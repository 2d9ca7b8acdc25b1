// Store: the positional storage interface every memsync layer speaks.
//
// A store is a fixed-size array of bytes addressed by offset. Backends say
// where the bytes live (mem:, file:, dir:, later remote:, redis:, tape:);
// wrappers (StoreWrapper below) add behaviour to any store; frontends (the
// NBD server, the kernel device) expose one.
//
// Contract for every implementation:
//  - Bounds are the CALLER's job: REQUIRES offset + length <= size() on
//    every call. Frontends validate requests once, at the edge; stores do not
//    re-check (nbdkit does the same), but must not corrupt memory if a caller
//    breaks the rule: they may return EINVAL or EIO.
//  - No alignment is required unless block_size() says so.
//  - read_at fills the whole span or fails; write_at writes the whole span
//    or fails. A failed write leaves the range's content unspecified.
//  - sync() makes every write that has completed before the call durable.
//  - Capabilities are queries (can_*), never experiments; the default
//    answer is "no" and the default operation returns unsupported.
//
// Thread safety: every method may be called concurrently from many threads
// for any ranges unless max_concurrency() says otherwise; concurrent writes
// to overlapping ranges leave one of the writes' data (unspecified which).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "util/status.hpp"

namespace memsync {

// A run of bytes with one allocation state, as reported by extents().
struct Extent {
  uint64_t length = 0;
  bool hole = false;  // not allocated in the backing storage
  bool zero = false;  // reads as zeros
};

class Store {
 public:
  virtual ~Store() = default;

  // Size in bytes; constant for the store's lifetime unless resize() succeeds.
  virtual uint64_t size() const = 0;

  virtual Status read_at(std::span<std::byte> buf, uint64_t offset) = 0;
  virtual Status write_at(std::span<const std::byte> buf, uint64_t offset) = 0;
  virtual Status sync() = 0;
  // Makes the writes to [offset, offset+length) that completed before the
  // call durable (NBD's FUA flag). Default: sync(), which covers them.
  // Stores where durability costs per byte (a managed mount pushes dirty
  // chunks to its remote) override it to do only the range.
  virtual Status sync_range(uint64_t offset, uint64_t length) {
    (void)offset, (void)length;
    return sync();
  }

  // Preferred I/O granularity; 1 means any offset and length are fine.
  virtual uint32_t block_size() const { return 1; }
  // True when no write can ever succeed (a read-only file, say).
  virtual bool is_read_only() const { return false; }
  // True when the content lives only as long as this process (memory): a
  // server that restarts comes back empty, which wire clients must notice.
  virtual bool is_volatile() const { return false; }
  // True when sync() is effective across all users of this store at once, so
  // NBD clients may spread I/O across connections (NBD_FLAG_CAN_MULTI_CONN).
  virtual bool can_multi_conn() const { return false; }

  // Discard a range: afterwards it reads as zeros or as its old data.
  virtual bool can_trim() const { return false; }
  virtual Status trim(uint64_t offset, uint64_t length);

  // Make a range read as zeros. may_punch allows deallocating it. The
  // default writes zero buffers, so every store offers it; fast_zero() says
  // whether it is cheaper than writing (for NBD_CMD_FLAG_FAST_ZERO).
  virtual Status write_zeroes(uint64_t offset, uint64_t length, bool may_punch);
  virtual bool can_fast_zero() const { return false; }

  // Allocation map of [offset, offset+length): appends extents covering at
  // least one byte from offset and at most the range; may stop early.
  virtual bool can_extents() const { return false; }
  virtual Status extents(uint64_t offset, uint64_t length, std::vector<Extent>& out);
  // True when extents() is cheap enough to ask on every read, so frontends
  // may send the holes of a read as holes. False for files: SEEK_HOLE can
  // cost time proportional to the file's size (tmpfs walks every page).
  virtual bool cheap_extents() const { return false; }

  // Hint that the range will be read soon (NBD_CMD_CACHE). Default: nothing.
  virtual Status prefetch(uint64_t offset, uint64_t length);

  // Whether a read or write of [offset, offset+length) is answered without
  // waiting on another machine. The NBD server runs several buffered
  // requests on one worker (one gathered write for their replies) only
  // while they are quick: behind a slow one, each would wait its round
  // trip. Default: yes, a local store.
  virtual bool quick(uint64_t offset, uint64_t length) {
    (void)offset, (void)length;
    return true;
  }

  virtual bool can_resize() const { return false; }
  virtual Status resize(uint64_t new_size);

  // Zero-copy access, for frontends that can move bytes without a copy
  // through their own buffers. Where [offset, offset+length) lives as-is in
  // a regular file (for sendfile) or in this process's memory, fill `out`
  // and return true; otherwise return false and use read_at/write_at.
  // REQUIRES: the range is in bounds. The memory stays valid for the
  // store's lifetime; concurrent writes to the range may show through, as
  // with read_at. Wrappers answer false unless they leave bytes unchanged.
  // `access` says what the caller does there. kRead: only reads (sendfile,
  // writev). A caching store may wait before answering kRead, fetching the
  // range first; false then means read_at will report why. kWrite: puts new
  // bytes there instead of calling write_at, so a store that must see its
  // writes (a managed mount marks chunks dirty) answers false.
  struct DirectRange {
    int fd = -1;                  // a regular file holding the bytes, or -1
    uint64_t file_offset = 0;     // where the range starts in fd
    std::byte* memory = nullptr;  // or the bytes themselves
    // With fd: a shared mapping of fd at file_offset, where WRITE payloads
    // may be received by read(2) (Channel::read_to_file). Only the kernel
    // may touch it: a page past a shrunken file's end gives EFAULT there,
    // but SIGBUS in user space. Reads keep using fd.
    std::byte* write_memory = nullptr;
    // With fd, set by the caller: writes into fd through this range hold
    // it (see Channel::read_to_file), for callers that fill one file from
    // many threads.
    std::mutex* write_lock = nullptr;
    // With fd: writes `bytes` at `at` bytes into the range by pwrite,
    // holding write_lock (never through write_memory). Memory ranges are
    // filled in place by their users.
    Status pwrite(std::span<const std::byte> bytes, uint64_t at) const;
  };
  enum class Access { kRead, kWrite };
  virtual bool direct_range(uint64_t offset, uint64_t length, Access access, DirectRange& out) {
    (void)offset, (void)length, (void)access, (void)out;
    return false;
  }
  // Copies [offset, offset+length) of this store into `dst`: a range of
  // another store that its direct_range(kWrite) gave (a cache filling
  // itself). Stores whose bytes arrive from a socket override it to put
  // them there with one copy (RemoteStore: socket to page cache). Default:
  // read_at, straight into dst.memory, or through a buffer into dst.fd.
  // A failure leaves the destination partly written.
  virtual Status read_into(const DirectRange& dst, uint64_t offset, uint64_t length);

  // One line naming the backend for logs and `nbd-attach --list`.
  virtual std::string describe() const = 0;

  // Gives up on a remote that is gone: requests waiting for it (to come
  // back, or for a reply) and all later ones fail with ECANCELED at once.
  // For shutting down when the user will not wait (a second stop signal).
  // Default: a local store has nothing to give up on.
  virtual void interrupt() {}
};

// Forwards every call to an inner store. Wrappers derive from it and
// override only what they change (like LevelDB's EnvWrapper and nbdkit
// filters). A wrapper that narrows a capability overrides its can_*.
class StoreWrapper : public Store {
 public:
  explicit StoreWrapper(std::shared_ptr<Store> inner) : inner_(std::move(inner)) {}

  uint64_t size() const override { return inner_->size(); }
  Status read_at(std::span<std::byte> b, uint64_t o) override { return inner_->read_at(b, o); }
  Status write_at(std::span<const std::byte> b, uint64_t o) override { return inner_->write_at(b, o); }
  Status sync() override { return inner_->sync(); }
  Status sync_range(uint64_t o, uint64_t l) override { return inner_->sync_range(o, l); }
  uint32_t block_size() const override { return inner_->block_size(); }
  bool is_read_only() const override { return inner_->is_read_only(); }
  bool can_multi_conn() const override { return inner_->can_multi_conn(); }
  bool is_volatile() const override { return inner_->is_volatile(); }
  bool can_trim() const override { return inner_->can_trim(); }
  Status trim(uint64_t o, uint64_t l) override { return inner_->trim(o, l); }
  Status write_zeroes(uint64_t o, uint64_t l, bool p) override { return inner_->write_zeroes(o, l, p); }
  bool can_fast_zero() const override { return inner_->can_fast_zero(); }
  bool can_extents() const override { return inner_->can_extents(); }
  bool cheap_extents() const override { return inner_->cheap_extents(); }
  Status extents(uint64_t o, uint64_t l, std::vector<Extent>& out) override { return inner_->extents(o, l, out); }
  Status prefetch(uint64_t o, uint64_t l) override { return inner_->prefetch(o, l); }
  bool quick(uint64_t o, uint64_t l) override { return inner_->quick(o, l); }
  bool can_resize() const override { return inner_->can_resize(); }
  Status resize(uint64_t n) override { return inner_->resize(n); }
  std::string describe() const override { return inner_->describe(); }
  void interrupt() override { inner_->interrupt(); }

 protected:
  Store& inner() { return *inner_; }

 private:
  std::shared_ptr<Store> inner_;
};

}  // namespace memsync
