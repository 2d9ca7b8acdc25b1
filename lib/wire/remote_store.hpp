// RemoteStore (`remote:ENDPOINT`): a store whose bytes live behind a memsync
// wire protocol v1 server (man/memsync-wire.7).
//
// Any number of threads may call it at once: each request gets an id, goes
// out as one frame, and one reader thread hands each reply to its caller,
// in whatever order the server answers. At most max_inflight requests are
// outstanding; a caller beyond that waits. Reads and writes larger than the
// negotiated max payload are split. Payloads are LZ4-compressed both ways
// when the server agrees and it makes them smaller.
// A dropped connection is dialled again (backoff 100 ms doubling to 5 s);
// requests that were not answered are sent again on the new connection, in
// their original order (reads and writes are positional, so repeating one
// is harmless), and new requests wait meanwhile. After outage_timeout
// without a connection the waiting requests fail with ETIMEDOUT, and so do
// new ones until a connection is back; redialling goes on. With
// outage_timeout 0 requests wait forever (swap: EIO would be fatal).
// A store opened without a way to dial again fails everything with
// ECONNRESET once the connection is lost.
//
// Thread safety: all methods from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "backend/store.hpp"
#include "net/channel.hpp"
#include "wire/compression.hpp"
#include "wire/frame.hpp"
#include "wire/remote_target.hpp"

namespace memsync::wire {

struct RemoteOptions {
  uint64_t features = kFeatureLz4 | kFeatureTrim;  // asked for
  uint32_t max_payload = kDefaultPayload;
  uint32_t max_inflight = kDefaultInflight;
  std::string name = "memsync";  // shown in the server's log
  // How long requests wait for a lost connection to come back (0 = forever).
  std::chrono::milliseconds outage_timeout{60000};
  // Mark every request URGENT: this connection carries only reads someone
  // waits for (the managed mount's second connection; memsync-wire(7)).
  bool urgent = false;
};

// Makes a new connection to the same server (see dial()).
using Dialer = std::function<Result<Connection>()>;

class RemoteStore final : public Store {
 public:
  // Dials target and says HELLO; redials after a lost connection. The
  // first connection is not retried: a wrong address fails at once.
  static Result<std::shared_ptr<RemoteStore>> connect(const RemoteTarget& target, const RemoteOptions& o);
  // The same with any way of making connections (tests use socketpairs).
  static Result<std::shared_ptr<RemoteStore>> open(Dialer dial, const RemoteOptions& o, std::string description);
  // One connection, never redialled.
  static Result<std::shared_ptr<RemoteStore>> open(std::unique_ptr<Channel> ch, const RemoteOptions& o,
                                                   std::string description);
  ~RemoteStore() override;

  uint64_t size() const override { return terms_.size; }
  Status read_at(std::span<std::byte> buf, uint64_t offset) override;
  Status write_at(std::span<const std::byte> buf, uint64_t offset) override;
  // Data goes from the socket into dst in one copy (a file by read(2) into
  // its mapping or by splice, never through our buffers).
  Status read_into(const DirectRange& dst, uint64_t offset, uint64_t length) override;
  bool quick(uint64_t, uint64_t) override { return false; }  // every request waits a round trip
  Status sync() override;
  uint32_t block_size() const override { return 1; }
  bool is_read_only() const override { return terms_.read_only; }
  bool can_multi_conn() const override { return true; }
  bool can_trim() const override { return (terms_.features & kFeatureTrim) && !terms_.read_only; }
  Status trim(uint64_t offset, uint64_t length) override;
  Status write_zeroes(uint64_t offset, uint64_t length, bool may_punch) override;
  std::string describe() const override { return "remote:" + description_; }
  void interrupt() override;

  const HelloReply& terms() const { return terms_; }

 private:
  struct Pending;
  RemoteStore() = default;
  static Result<std::shared_ptr<RemoteStore>> start(std::shared_ptr<RemoteStore> s, Dialer dial,
                                                    const RemoteOptions& o, std::string description);
  // HELLO on a new connection, bounded by a deadline.
  Result<HelloReply> handshake(Channel& ch);
  // Sends one request (not READ: see read_into) and waits for its reply.
  Status call(uint16_t type, uint16_t flags, std::initializer_list<std::span<const std::byte>> parts);
  // call() in two halves, for several requests in flight from one caller.
  // submit() may wait for an in-flight slot; p must stay put until wait().
  void submit(Pending& p);
  Status wait(Pending& p);
  // TRIM or WRITE_ZEROES over a range of any length, in 1 GiB requests.
  Status zero_range(uint16_t type, uint64_t offset, uint64_t length);
  // REQUIRES write_mu_: sends p on the current connection unless it is
  // down or p already went out on it.
  void send_locked(uint64_t id, Pending& p);
  // The reader thread: replies, and reconnecting after a loss.
  void run_reader();
  Status read_replies(Channel& ch);
  Status deliver(Channel& ch, const FrameHeader& h, Pending& p);
  // Redials with backoff until connected (true) or stopped / given up.
  bool reconnect(const Status& why);
  Status try_reconnect(bool& permanent);
  // Fails every waiting request with st; new ones fail with it too until a
  // reconnect (or forever when permanent).
  void fail_all(const Status& st, bool permanent);
  bool stopping();

  Dialer dial_;  // empty: never reconnect
  RemoteOptions opts_;
  Hello hello_;
  HelloReply terms_;  // of the first connection; later ones must match
  std::string description_;

  // Lock order: write_mu_, then mu_.
  std::mutex write_mu_;
  Connection conn_;          // replaced (under write_mu_) only by the reader thread
  uint64_t generation_ = 0;  // guarded by write_mu_: counts connections
  bool connected_ = false;   // guarded by write_mu_: conn_ has said HELLO and is alive

  std::mutex mu_;
  std::condition_variable stop_cv_;  // stopping_ was set (ends a backoff wait)
  std::condition_variable room_;     // an in-flight slot opened, or requests fail
  unsigned room_waiters_ = 0;        // guarded by mu_: callers waiting for room_
  std::map<uint64_t, Pending*> pending_;  // guarded by mu_: sent or waiting to be sent
  uint64_t next_id_ = 1;                  // guarded by mu_
  Status failing_;                        // guarded by mu_: not ok = new requests fail with it
  bool is_permanent_ = false;             // guarded by mu_: failing_ is for good
  bool stopping_ = false;                 // guarded by mu_
  std::atomic<bool> unsynced_{false};     // written since the last successful sync
  CompressionGate gate_;                  // our WRITE payloads' LZ4 attempts
  std::jthread reader_;
};

}  // namespace memsync::wire
