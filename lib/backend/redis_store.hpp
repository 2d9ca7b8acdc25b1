// RedisStore (`redis:unix:PATH?size=SIZE` or `redis:tcp:HOST:PORT?size=SIZE`):
// a store kept in a Redis server through hiredis, one string key per chunk.
//
// Chunk i is the key PREFIX + i in decimal ("memsync:0", "memsync:1", ...),
// holding exactly `chunk` bytes (the last chunk too: its bytes past size()
// stay zero). A missing key reads as zeros, so an empty database is an
// all-zero store. A chunk whose new content is all zeros is deleted rather
// than stored, and trim/write_zeroes delete the whole chunks of their range,
// so Redis holds only chunks with data. Redis records no geometry: a key of
// any other length (another chunk size, or not ours) makes a read or a
// partial write of its chunk fail with EIO naming the key, never a crash; a
// whole-chunk write replaces it. MGET reports keys of another type (a list,
// say) as missing, so such a chunk reads as zeros until it is written.
//
// Round trips: a request is cut into batches of at most 8 MiB of chunks (at
// least one chunk). A read batch is one MGET. A write batch of whole chunks
// is one MSET of the non-zero chunks and one DEL of the zero ones, appended
// (redisAppendCommandArgv) before any reply is read: one round trip. A batch
// with partial chunks (at most two per request: its unaligned edges) first
// sends WATCH and MGET of those, then MULTI, MSET, DEL, EXEC: two round
// trips. So a request costs about (bytes / 8 MiB) round trips, not one per
// chunk; one MSET rather than a SET per chunk also lets hiredis format the
// batch into one buffer instead of growing its output buffer chunk by chunk.
//
// Concurrency: a pool of `connections` hiredis connections, opened lazily
// (open() makes the first one, so a wrong endpoint or password fails there);
// a request holds one connection for its whole duration, so at most that
// many requests talk to Redis at once and others wait for a free one.
// Partial-chunk writes are read-modify-write, serialised per chunk by 256
// striped mutexes (at most two held, taken in ascending order), so
// concurrent partial writes to one chunk all land. Whole-chunk writes take
// no lock; a partial write that one slips between its read and write-back
// is caught by WATCH (EXEC fails) and redone on the new value, so the result
// is always one write after the other. WATCH also covers writers in other
// processes using the same keys. Reads take no locks; a read racing a write
// may see some chunks old and some new, as with any store.
// multi-conn is safe: every connection reaches the same Redis.
//
// Failures: a connection-level failure (refused, lost, timed out) is EIO
// with "redis ENDPOINT: reason". A connection that fails mid-request is
// replaced and its batch sent again, at most once per request: MSET and DEL
// of whole values are idempotent, and a partial chunk is read again under
// the same lock and WATCH, so a retry cannot lose another writer's bytes. A
// timeout is not retried (the server is hung, not restarted). Connecting
// waits at most connect_timeout; every command waits at most
// command_timeout, so a hung Redis fails requests instead of hanging them.
// Error replies map to errno: OOM (maxmemory reached) is ENOSPC, READONLY (a
// replica) is EROFS, NOAUTH/WRONGPASS/NOPERM are EACCES, others EIO.
// hiredis writes with write(2), so a dead server would raise SIGPIPE: each
// exchange blocks SIGPIPE in the calling thread and discards one it caused.
//
// sync() returns ok without a round trip: Redis acknowledges a SET once the
// value is in its memory, and whether that survives a crash is Redis's
// persistence configuration (`appendonly yes` with `appendfsync always`
// makes every acknowledged write durable; with persistence off, nothing is).
// WAIT would only count replicas, not disks, so it is not issued.
// Not volatile in the Store sense: the data outlives this process.
//
// Thread safety: as Store.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backend/store.hpp"
#include "net/endpoint.hpp"

namespace memsync {

struct RedisConn;  // one pooled hiredis connection (redis_store.cpp)

struct RedisStoreOptions {
  uint64_t size = 0;                    // bytes; required, > 0
  uint32_t chunk = 64 * 1024;           // bytes per key; a power of two, 512 .. 32M; default 64K
  std::string prefix = "memsync:";      // key name prefix; not empty (bare numbers are too common)
  unsigned db = 0;                      // Redis database (SELECT), 0 .. 15; default 0
  bool read_only = false;               // writes, trim and zeroing fail with EPERM
  unsigned connections = 4;             // pooled connections = concurrent requests, 1 .. 64
  std::optional<std::string> password;  // sent with AUTH on every connection when set

  // Tuning.
  std::chrono::milliseconds connect_timeout{5000};   // per connection attempt; default 5 s
  std::chrono::milliseconds command_timeout{30000};  // per reply awaited; default 30 s
};

// Validates options without connecting: Status::invalid naming the bad
// field and the accepted values, or ok.
Status check_redis_options(const RedisStoreOptions& opts);

class RedisStore final : public Store {
 public:
  // Connects once (AUTH, SELECT, PING) to check the endpoint and options.
  // ep: Kind::Unix (not abstract: hiredis cannot reach @NAME) or Kind::Tcp
  // (empty host = 127.0.0.1). Returns EINVAL for bad options or endpoint
  // kinds, EACCES for a refused password, EIO when Redis cannot be reached.
  static Result<std::shared_ptr<RedisStore>> open(const Endpoint& ep, const RedisStoreOptions& opts);
  ~RedisStore() override;

  uint64_t size() const override { return size_; }
  // Out-of-range requests return EINVAL; I/O errors as in the file comment.
  Status read_at(std::span<std::byte> buf, uint64_t offset) override;
  // EPERM when read-only. On failure the range's content is unspecified.
  Status write_at(std::span<const std::byte> buf, uint64_t offset) override;
  // Always ok; see the file comment for what durability means here.
  Status sync() override { return Status::ok(); }
  bool quick(uint64_t, uint64_t) override { return false; }  // every request waits for redis-server
  bool is_read_only() const override { return read_only_; }
  bool can_multi_conn() const override { return true; }
  bool can_trim() const override { return !read_only_; }
  Status trim(uint64_t offset, uint64_t length) override { return write_zeroes(offset, length, true); }
  // Deletes whole chunks and zero-fills partial edges whatever may_punch
  // says: storing zeros would reserve nothing, since a later SET allocates a
  // new value anyway, so NBD_CMD_FLAG_NO_HOLE has nothing to protect here.
  Status write_zeroes(uint64_t offset, uint64_t length, bool may_punch) override;
  bool can_fast_zero() const override { return !read_only_; }
  // "redis:unix:/run/redis.sock (db 0, prefix memsync:, chunk 64K)".
  std::string describe() const override;

  uint32_t chunk_size() const { return chunk_; }
  // The key holding chunk `index` (for tests and tools that inspect Redis).
  std::string key(uint64_t index) const;

 private:
  class Lease;
  // The part of one chunk a request touches: bytes [in, in+n) of chunk
  // `index`, at byte `at` of the request's buffer.
  struct Piece {
    uint64_t index = 0;
    uint32_t in = 0, n = 0;
    uint64_t at = 0;
  };

  RedisStore() = default;
  Status connect(RedisConn& conn) const;
  Lease acquire();
  void release(RedisConn* conn);
  // Runs batch(conn) on the lease's connection, connecting it if needed; a
  // connection lost mid-batch is replaced and the batch run again, at most
  // once per lease (one lease = one request).
  template <class Fn> Status with_retry(Lease& lease, Fn&& batch);
  // REQUIRES: the range is in bounds. Cuts it into batches of pieces.
  template <class Fn> Status for_each_batch(uint64_t offset, uint64_t length, Fn&& fn) const;
  Status check_range(uint64_t offset, uint64_t length) const;
  bool whole(const Piece& p) const;
  // `data` null means zeros.
  Status write_range(const std::byte* data, uint64_t offset, uint64_t length);
  Status read_batch(RedisConn& conn, std::span<const Piece> pieces, std::byte* out) const;
  Status write_batch(RedisConn& conn, std::span<const Piece> pieces, const std::byte* data) const;
  Status bad_value(uint64_t index, size_t length) const;

  Endpoint ep_;
  std::string where_;  // "redis ENDPOINT", the context of every error
  RedisStoreOptions opts_;
  uint64_t size_ = 0;
  uint32_t chunk_ = 0;
  bool read_only_ = false;

  std::array<std::mutex, 256> stripes_;  // chunk i's read-modify-write lock is stripes_[i % 256]

  std::mutex mu_;  // guards the pool below
  std::condition_variable freed_;
  std::vector<std::unique_ptr<RedisConn>> conns_;  // every connection slot made so far
  std::vector<RedisConn*> idle_;                   // slots no request holds
};

}  // namespace memsync
