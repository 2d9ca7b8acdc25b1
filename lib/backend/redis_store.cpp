#include "backend/redis_store.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "util/sigpipe_guard.hpp"
#include "util/units.hpp"

namespace memsync {

// One pooled connection. ctx is null until connected and again after the
// connection failed (the next user connects afresh).
struct RedisConn {
  redisContext* ctx = nullptr;
  bool failed = false;     // the connection is unusable (out of step or gone)
  bool timed_out = false;  // ... because a command timed out
  ~RedisConn() {
    if (ctx) redisFree(ctx);
  }
  void drop() {
    if (ctx) redisFree(ctx);
    ctx = nullptr;
    failed = timed_out = false;
  }
};

namespace {

// Bytes of chunks per round trip: large enough that latency is noise next to
// transfer time (8 MiB is ~1-3 ms over a local socket), small enough that
// replies and hiredis's buffers stay bounded for any request size.
constexpr uint64_t kBatchBytes = 8 << 20;
constexpr uint32_t kMinChunk = 512, kMaxChunk = 32u << 20;
constexpr unsigned kMaxConnections = 64, kDatabases = 16;
// Each failed attempt means another writer changed the chunk meanwhile, so
// writers as a whole progress; the bound only stops a livelock.
constexpr unsigned kMaxWatchAttempts = 1000;

struct FreeReply {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, FreeReply>;

timeval to_timeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000), static_cast<suseconds_t>(ms.count() % 1000 * 1000)};
}

bool all_zero(const std::byte* p, size_t n) {
  // Comparing the buffer with itself shifted by one uses libc's vectorised memcmp.
  return n == 0 || (p[0] == std::byte{0} && std::memcmp(p, p + 1, n - 1) == 0);
}

bool starts_with(const redisReply* r, std::string_view word) {
  return r->len >= word.size() && std::string_view(r->str, word.size()) == word;
}

// One error reply as a Status: an errno the frontends can pass on.
Status reply_error(const std::string& where, const redisReply* r) {
  std::string text(r->str, r->len);
  int code = EIO;
  if (starts_with(r, "OOM")) code = ENOSPC;
  else if (starts_with(r, "READONLY")) code = EROFS;
  else if (starts_with(r, "NOAUTH") || starts_with(r, "WRONGPASS") || starts_with(r, "NOPERM")) code = EACCES;
  return Status::error(code, where + ": " + text);
}

// A reply of an unexpected shape (not an error reply): this is not the
// Redis we think it is, or a proxy in between misbehaves.
Status unexpected(const std::string& where, const char* command, const redisReply* r) {
  return Status::io(where + ": unexpected reply type " + std::to_string(r->type) + " to " + command);
}

// A command as an argument vector that points into buffers the caller keeps.
struct Command {
  std::vector<const char*> argv;
  std::vector<size_t> len;
  void add(const void* p, size_t n) {
    argv.push_back(static_cast<const char*>(p));
    len.push_back(n);
  }
  void add(const std::string& s) { add(s.data(), s.size()); }
  size_t args() const { return argv.size(); }
};

// The connection failed (c->err is set): EIO naming the endpoint. err is the
// errno of the failed call; EAGAIN there is SO_RCVTIMEO/SO_SNDTIMEO expiring.
Status lost(const std::string& where, RedisConn& conn, int err, std::chrono::milliseconds timeout) {
  redisContext* c = conn.ctx;
  conn.failed = true;
  conn.timed_out = c->err == REDIS_ERR_IO && (err == EAGAIN || err == EWOULDBLOCK);
  if (conn.timed_out)
    return Status::io(where + ": no reply within " + std::to_string(timeout.count()) + " ms");
  return Status::io(where + ": " + (c->errstr[0] ? c->errstr : "connection failed"));
}

}  // namespace

// A pool slot held by one request; returns it to the pool when destroyed.
class RedisStore::Lease {
 public:
  Lease(RedisStore* store, RedisConn* conn) : store_(store), conn_(conn) {}
  Lease(Lease&& o) noexcept : store_(o.store_), conn_(std::exchange(o.conn_, nullptr)) {
    retried = o.retried;
  }
  Lease& operator=(Lease&&) = delete;
  ~Lease() {
    if (conn_) store_->release(conn_);
  }
  RedisConn& conn() { return *conn_; }
  bool retried = false;  // this request already replaced a lost connection

 private:
  RedisStore* store_;
  RedisConn* conn_;
};

namespace {

// The stripe locks of a write batch's partial chunks, taken in ascending
// stripe order (so two batches never wait for each other in a cycle) and
// released on destruction. A request has at most two partial chunks.
class StripeLocks {
 public:
  template <size_t N>
  StripeLocks(std::array<std::mutex, N>& stripes, std::vector<uint64_t> indexes) {
    for (auto& i : indexes) i %= N;
    std::sort(indexes.begin(), indexes.end());
    indexes.erase(std::unique(indexes.begin(), indexes.end()), indexes.end());
    for (uint64_t s : indexes) held_.push_back(&stripes[s]);
    for (auto* m : held_) m->lock();
  }
  ~StripeLocks() {
    for (auto it = held_.rbegin(); it != held_.rend(); ++it) (*it)->unlock();
  }
  StripeLocks(const StripeLocks&) = delete;
  StripeLocks& operator=(const StripeLocks&) = delete;

 private:
  std::vector<std::mutex*> held_;
};

// Appends cmd to the connection's output and reads every reply of what was
// appended (count of them) into replies, sending it all in one round trip.
Status send_commands(RedisConn& conn, const std::vector<Command>& cmds, std::vector<ReplyPtr>& replies,
                     const std::string& where, std::chrono::milliseconds timeout) {
  replies.clear();
  for (const auto& cmd : cmds) {
    // hiredis 0.14 takes argv without const; it only reads it.
    auto argv = const_cast<const char**>(cmd.argv.data());
    if (redisAppendCommandArgv(conn.ctx, static_cast<int>(cmd.args()), argv, cmd.len.data()) != REDIS_OK)
      return lost(where, conn, ENOMEM, timeout);
  }
  SigpipeGuard guard;
  for (size_t i = 0; i < cmds.size(); ++i) {
    void* r = nullptr;
    if (redisGetReply(conn.ctx, &r) != REDIS_OK || r == nullptr) return lost(where, conn, errno, timeout);
    replies.emplace_back(static_cast<redisReply*>(r));
  }
  return Status::ok();
}

}  // namespace

Status check_redis_options(const RedisStoreOptions& o) {
  if (o.size == 0) return Status::invalid("redis: size must be given and positive (?size=SIZE)");
  if (o.chunk < kMinChunk || o.chunk > kMaxChunk || (o.chunk & (o.chunk - 1)) != 0)
    return Status::invalid("redis: chunk " + std::to_string(o.chunk) + " is not a power of two between 512 and 32M");
  if (o.prefix.empty())
    return Status::invalid("redis: prefix must not be empty (keys named by bare numbers would mix with other data)");
  if (o.db >= kDatabases)
    return Status::invalid("redis: db " + std::to_string(o.db) + " is out of range (Redis databases are 0 to 15)");
  if (o.connections < 1 || o.connections > kMaxConnections)
    return Status::invalid("redis: connections must be between 1 and 64, not " + std::to_string(o.connections));
  if (o.password && o.password->empty()) return Status::invalid("redis: password must not be empty when given");
  if (o.connect_timeout.count() <= 0 || o.command_timeout.count() <= 0)
    return Status::invalid("redis: timeouts must be positive");
  return Status::ok();
}

Result<std::shared_ptr<RedisStore>> RedisStore::open(const Endpoint& ep, const RedisStoreOptions& opts) {
  MEMSYNC_TRY(check_redis_options(opts));
  if (ep.kind == Endpoint::Kind::Unix) {
    if (ep.path.empty() || ep.path[0] == '@')
      return Status::invalid("redis: " + ep.to_string() + ": abstract unix sockets are not supported by hiredis");
  } else if (ep.kind == Endpoint::Kind::Tcp) {
    if (ep.host == "*" || ep.port == 0)
      return Status::invalid("redis: " + ep.to_string() + " names no server to connect to");
  } else {
    return Status::invalid("redis: endpoint " + ep.to_string() + " must be unix:PATH or tcp:HOST:PORT");
  }
  std::shared_ptr<RedisStore> s(new RedisStore());
  s->ep_ = ep;
  s->where_ = "redis " + ep.to_string();
  s->opts_ = opts;
  s->size_ = opts.size;
  s->chunk_ = opts.chunk;
  s->read_only_ = opts.read_only;
  // The first connection now, so a wrong endpoint or password fails open().
  auto conn = std::make_unique<RedisConn>();
  MEMSYNC_TRY(s->connect(*conn));
  s->idle_.push_back(conn.get());
  s->conns_.push_back(std::move(conn));
  return s;
}

RedisStore::~RedisStore() = default;

std::string RedisStore::describe() const {
  return "redis:" + ep_.to_string() + " (db " + std::to_string(opts_.db) + ", prefix " + opts_.prefix + ", chunk " +
         format_size(chunk_) + ")";
}

std::string RedisStore::key(uint64_t index) const { return opts_.prefix + std::to_string(index); }

Status RedisStore::connect(RedisConn& conn) const {
  conn.drop();
  const timeval tv = to_timeval(opts_.connect_timeout);
  if (ep_.kind == Endpoint::Kind::Unix) {
    conn.ctx = redisConnectUnixWithTimeout(ep_.path.c_str(), tv);
  } else {
    const std::string host = ep_.host.empty() ? "127.0.0.1" : ep_.host;
    conn.ctx = redisConnectWithTimeout(host.c_str(), ep_.port, tv);
  }
  if (!conn.ctx) return Status::io(where_ + ": out of memory for a connection");
  if (conn.ctx->err) {
    Status st = Status::io(where_ + ": connect: " + conn.ctx->errstr);
    conn.drop();
    return st;
  }
  if (redisSetTimeout(conn.ctx, to_timeval(opts_.command_timeout)) != REDIS_OK) {
    Status st = Status::io(where_ + ": set timeout: " + conn.ctx->errstr);
    conn.drop();
    return st;
  }
  // AUTH, SELECT and PING in one round trip; PING proves a Redis answers.
  std::vector<Command> cmds;
  const std::string auth = "AUTH", select = "SELECT", ping = "PING", db = std::to_string(opts_.db);
  if (opts_.password) {
    cmds.emplace_back().add(auth);
    cmds.back().add(*opts_.password);
  }
  if (opts_.db != 0) {
    cmds.emplace_back().add(select);
    cmds.back().add(db);
  }
  cmds.emplace_back().add(ping);
  std::vector<ReplyPtr> replies;
  Status st = send_commands(conn, cmds, replies, where_, opts_.command_timeout);
  for (size_t i = 0; st && i < replies.size(); ++i) {
    const redisReply* r = replies[i].get();
    const char* what = cmds[i].argv[0];
    if (r->type == REDIS_REPLY_ERROR) st = reply_error(where_ + ": " + what, r);
    else if (r->type != REDIS_REPLY_STATUS) st = unexpected(where_, what, r);
  }
  if (!st) conn.drop();
  return st;
}

RedisStore::Lease RedisStore::acquire() {
  std::unique_lock lock(mu_);
  freed_.wait(lock, [&] { return !idle_.empty() || conns_.size() < opts_.connections; });
  if (!idle_.empty()) {
    RedisConn* c = idle_.back();  // the most recently used: likely still connected
    idle_.pop_back();
    return Lease(this, c);
  }
  conns_.push_back(std::make_unique<RedisConn>());  // connected by its first batch
  return Lease(this, conns_.back().get());
}

void RedisStore::release(RedisConn* conn) {
  {
    std::lock_guard lock(mu_);
    idle_.push_back(conn);
  }
  freed_.notify_one();
}

template <class Fn>
Status RedisStore::with_retry(Lease& lease, Fn&& batch) {
  RedisConn& conn = lease.conn();
  for (;;) {
    bool fresh = false;
    if (!conn.ctx) {
      MEMSYNC_TRY(connect(conn));
      fresh = true;
    }
    Status st = batch(conn);
    if (st || !conn.failed) return st;  // done, or Redis answered with an error
    // A timeout means a hung server: waiting again would double the delay.
    // A connection made just now that failed at once will not do better.
    const bool retry = !fresh && !conn.timed_out && !lease.retried;
    conn.drop();
    if (!retry) return st;
    lease.retried = true;
  }
}

Status RedisStore::check_range(uint64_t offset, uint64_t length) const {
  if (offset > size_ || length > size_ - offset)
    return Status::invalid("request beyond the end of " + describe());
  return Status::ok();
}

bool RedisStore::whole(const Piece& p) const {
  // The last chunk's bytes past size() are always zero, so covering up to
  // the end of the store determines the whole value.
  return p.in == 0 && (p.n == chunk_ || p.index * chunk_ + p.n == size_);
}

template <class Fn>
Status RedisStore::for_each_batch(uint64_t offset, uint64_t length, Fn&& fn) const {
  const size_t per_batch = static_cast<size_t>(std::max<uint64_t>(1, kBatchBytes / chunk_));
  std::vector<Piece> batch;
  batch.reserve(static_cast<size_t>(std::min<uint64_t>(per_batch, length / chunk_ + 2)));
  uint64_t done = 0;
  while (done < length) {
    const uint64_t pos = offset + done;
    Piece p;
    p.index = pos / chunk_;
    p.in = static_cast<uint32_t>(pos % chunk_);
    p.n = static_cast<uint32_t>(std::min<uint64_t>(length - done, chunk_ - p.in));
    p.at = done;
    batch.push_back(p);
    done += p.n;
    if (batch.size() == per_batch || done == length) {
      MEMSYNC_TRY(fn(std::span<const Piece>(batch)));
      batch.clear();
    }
  }
  return Status::ok();
}

Status RedisStore::bad_value(uint64_t index, size_t length) const {
  return Status::io(where_ + ": key " + key(index) + " holds " + std::to_string(length) + " bytes, not a chunk of " +
                    std::to_string(chunk_) + " (another chunk size, or not memsync data)");
}

Status RedisStore::read_batch(RedisConn& conn, std::span<const Piece> pieces, std::byte* out) const {
  std::vector<std::string> keys;
  keys.reserve(pieces.size());
  std::vector<Command> cmds(1);
  cmds[0].add("MGET", 4);
  for (const auto& p : pieces) cmds[0].add(keys.emplace_back(key(p.index)));
  std::vector<ReplyPtr> replies;
  MEMSYNC_TRY(send_commands(conn, cmds, replies, where_, opts_.command_timeout));
  const redisReply* r = replies[0].get();
  if (r->type == REDIS_REPLY_ERROR) return reply_error(where_ + ": MGET", r);
  if (r->type != REDIS_REPLY_ARRAY || r->elements != pieces.size()) return unexpected(where_, "MGET", r);
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece& p = pieces[i];
    const redisReply* e = r->element[i];
    if (e->type == REDIS_REPLY_NIL) {
      std::memset(out + p.at, 0, p.n);
    } else if (e->type == REDIS_REPLY_STRING) {
      if (e->len != chunk_) return bad_value(p.index, e->len);
      std::memcpy(out + p.at, e->str + p.in, p.n);
    } else {
      return unexpected(where_, "MGET", e);
    }
  }
  return Status::ok();
}

Status RedisStore::write_batch(RedisConn& conn, std::span<const Piece> pieces, const std::byte* data) const {
  std::vector<std::string> keys;
  keys.reserve(pieces.size());
  std::vector<size_t> partial;
  for (size_t i = 0; i < pieces.size(); ++i) {
    keys.push_back(key(pieces[i].index));
    if (!whole(pieces[i])) partial.push_back(i);
  }
  std::vector<ReplyPtr> replies;
  for (unsigned attempt = 1;; ++attempt) {
    // Values built here: partial chunks (old value overlaid) and a whole
    // last chunk shorter than `chunk` (padded with zeros).
    std::vector<std::vector<std::byte>> built(pieces.size());
    if (!partial.empty()) {
      std::vector<Command> cmds(2);
      cmds[0].add("WATCH", 5);
      cmds[1].add("MGET", 4);
      for (size_t i : partial) {
        cmds[0].add(keys[i]);
        cmds[1].add(keys[i]);
      }
      MEMSYNC_TRY(send_commands(conn, cmds, replies, where_, opts_.command_timeout));
      Status st = replies[0]->type == REDIS_REPLY_ERROR ? reply_error(where_ + ": WATCH", replies[0].get())
                                                        : Status::ok();
      const redisReply* r = replies[1].get();
      if (st && r->type == REDIS_REPLY_ERROR) st = reply_error(where_ + ": MGET", r);
      if (st && (r->type != REDIS_REPLY_ARRAY || r->elements != partial.size())) st = unexpected(where_, "MGET", r);
      for (size_t j = 0; st && j < partial.size(); ++j) {
        const redisReply* e = r->element[j];
        auto& value = built[partial[j]];
        value.assign(chunk_, std::byte{0});
        if (e->type == REDIS_REPLY_STRING) {
          if (e->len != chunk_) st = bad_value(pieces[partial[j]].index, e->len);
          else std::memcpy(value.data(), e->str, chunk_);
        } else if (e->type != REDIS_REPLY_NIL) {
          st = unexpected(where_, "MGET", e);
        }
      }
      if (!st) {
        // Leave the connection watching nothing for its next user.
        std::vector<Command> unwatch(1);
        unwatch[0].add("UNWATCH", 7);
        send_commands(conn, unwatch, replies, where_, opts_.command_timeout).ignore();
        return st;
      }
    }

    // Every chunk's new value, then one MSET of the non-zero ones and one
    // DEL of the zero ones, sent together.
    Command mset, del;
    mset.add("MSET", 4);
    del.add("DEL", 3);
    for (size_t i = 0; i < pieces.size(); ++i) {
      const Piece& p = pieces[i];
      const std::byte* value = nullptr;
      if (!built[i].empty() || (p.n != chunk_ && data)) {
        auto& v = built[i];
        if (v.empty()) v.assign(chunk_, std::byte{0});
        if (data) std::memcpy(v.data() + p.in, data + p.at, p.n);
        else std::memset(v.data() + p.in, 0, p.n);
        value = v.data();
      } else if (data) {
        value = data + p.at;  // a whole chunk straight from the caller's buffer
      }
      if (!value || all_zero(value, chunk_)) {
        del.add(keys[i]);
      } else {
        mset.add(keys[i]);
        mset.add(value, chunk_);
      }
    }
    // With partial chunks, MULTI/EXEC applies the batch only if no watched
    // key changed since it was read (a whole-chunk write of this process, or
    // any write of another); EXEC answers nil then, and we read again.
    std::vector<Command> cmds;
    if (!partial.empty()) cmds.emplace_back().add("MULTI", 5);
    if (mset.args() > 1) cmds.push_back(std::move(mset));
    if (del.args() > 1) cmds.push_back(std::move(del));
    if (!partial.empty()) cmds.emplace_back().add("EXEC", 4);
    MEMSYNC_TRY(send_commands(conn, cmds, replies, where_, opts_.command_timeout));
    // Queued commands answer QUEUED (or an error that makes EXEC fail);
    // EXEC answers their real replies as an array.
    std::vector<const redisReply*> results;
    for (size_t i = 0; i < replies.size(); ++i) {
      const redisReply* r = replies[i].get();
      const char* what = cmds[i].argv[0];
      if (r->type == REDIS_REPLY_ERROR) return reply_error(where_ + ": " + what, r);
      if (partial.empty()) {
        results.push_back(r);
      } else if (std::strcmp(what, "EXEC") == 0) {
        if (r->type == REDIS_REPLY_NIL) break;  // a watched key changed
        if (r->type != REDIS_REPLY_ARRAY || r->elements != cmds.size() - 2) return unexpected(where_, what, r);
        results.assign(r->element, r->element + r->elements);
      } else if (r->type != REDIS_REPLY_STATUS) {
        return unexpected(where_, what, r);
      }
    }
    if (!partial.empty() && results.empty()) {
      if (attempt == kMaxWatchAttempts)
        return Status::io(where_ + ": chunks " + keys[partial.front()] + " .. " + keys[partial.back()] +
                          " kept changing during " + std::to_string(attempt) + " read-modify-write attempts");
      // Back off a little, growing: a writer that rewrites the whole chunk
      // in a tight loop must not starve us into the bound above.
      std::this_thread::sleep_for(std::chrono::microseconds(std::min(1000u, 10u << std::min(attempt, 7u))));
      continue;
    }
    const size_t first = partial.empty() ? 0 : 1;
    for (size_t i = 0; i < results.size(); ++i) {
      const redisReply* r = results[i];
      const char* what = cmds[first + i].argv[0];
      if (r->type == REDIS_REPLY_ERROR) return reply_error(where_ + ": " + what, r);
      const bool expected = std::strcmp(what, "DEL") == 0 ? r->type == REDIS_REPLY_INTEGER
                                                           : r->type == REDIS_REPLY_STATUS;
      if (!expected) return unexpected(where_, what, r);
    }
    return Status::ok();
  }
}

Status RedisStore::read_at(std::span<std::byte> buf, uint64_t offset) {
  MEMSYNC_TRY(check_range(offset, buf.size()));
  if (buf.empty()) return Status::ok();
  Lease lease = acquire();
  return for_each_batch(offset, buf.size(), [&](std::span<const Piece> pieces) {
    return with_retry(lease, [&](RedisConn& conn) { return read_batch(conn, pieces, buf.data()); });
  });
}

Status RedisStore::write_range(const std::byte* data, uint64_t offset, uint64_t length) {
  if (read_only_) return Status::error(EPERM, describe() + " is read-only");
  MEMSYNC_TRY(check_range(offset, length));
  if (length == 0) return Status::ok();
  Lease lease = acquire();
  return for_each_batch(offset, length, [&](std::span<const Piece> pieces) {
    std::vector<uint64_t> partial;
    for (const auto& p : pieces)
      if (!whole(p)) partial.push_back(p.index);
    StripeLocks locks(stripes_, std::move(partial));
    return with_retry(lease, [&](RedisConn& conn) { return write_batch(conn, pieces, data); });
  });
}

Status RedisStore::write_at(std::span<const std::byte> buf, uint64_t offset) {
  return write_range(buf.data(), offset, buf.size());
}

Status RedisStore::write_zeroes(uint64_t offset, uint64_t length, bool) {
  return write_range(nullptr, offset, length);
}

}  // namespace memsync
