// RemoteStore (`remote:ENDPOINT`): a store whose bytes live behind a memsync
// wire protocol v1 server (man/memsync-wire.7).
//
// Any number of threads may call it at once: each request gets an id, goes
// out as one frame, and one reader thread hands each reply to its caller,
// in whatever order the server answers. At most max_inflight requests are
// outstanding; a caller beyond that waits. Reads and writes larger than the
// negotiated max payload are split. Payloads are LZ4-compressed both ways
// when the server agrees and it makes them smaller.
// A dropped connection fails the requests in flight and every later one with
// ECONNRESET (reconnecting is the managed mount's job, a later piece).
//
// Thread safety: all methods from any thread.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "backend/store.hpp"
#include "net/channel.hpp"
#include "wire/frame.hpp"

namespace memsync::wire {

struct RemoteOptions {
  uint64_t features = kFeatureLz4 | kFeatureTrim;  // asked for
  uint32_t max_payload = kDefaultPayload;
  uint32_t max_inflight = kDefaultInflight;
  std::string name = "memsync";  // shown in the server's log
};

class RemoteStore final : public Store {
 public:
  // Says HELLO on ch (connected, plain or a TLS relay's plaintext end).
  static Result<std::shared_ptr<RemoteStore>> open(std::unique_ptr<Channel> ch, const RemoteOptions& o,
                                                   std::string description);
  ~RemoteStore() override;

  uint64_t size() const override { return terms_.size; }
  Status read_at(std::span<std::byte> buf, uint64_t offset) override;
  Status write_at(std::span<const std::byte> buf, uint64_t offset) override;
  Status sync() override;
  uint32_t block_size() const override { return 1; }
  bool is_read_only() const override { return terms_.read_only; }
  bool can_multi_conn() const override { return true; }
  bool can_trim() const override { return (terms_.features & kFeatureTrim) && !terms_.read_only; }
  Status trim(uint64_t offset, uint64_t length) override;
  Status write_zeroes(uint64_t offset, uint64_t length, bool may_punch) override;
  std::string describe() const override { return "remote:" + description_; }

  const HelloReply& terms() const { return terms_; }

 private:
  struct Pending;
  RemoteStore() = default;
  // Sends one request and waits for its reply. For READ, `into` receives
  // the data.
  Status call(uint16_t type, uint16_t flags, std::initializer_list<std::span<const std::byte>> parts,
              std::span<std::byte> into = {});
  // TRIM or WRITE_ZEROES over a range of any length, in 1 GiB requests.
  Status zero_range(uint16_t type, uint64_t offset, uint64_t length);
  void read_replies();
  Status deliver(const FrameHeader& h, Pending& p);
  void fail_all(const Status& st);

  std::unique_ptr<Channel> ch_;
  HelloReply terms_;
  std::string description_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Pending*> pending_;  // guarded by mu_
  uint64_t next_id_ = 1;                  // guarded by mu_
  bool is_broken_ = false;                // guarded by mu_: the connection is gone
  Status broken_;                         // guarded by mu_: why
  std::mutex write_mu_;
  std::jthread reader_;
};

}  // namespace memsync::wire
