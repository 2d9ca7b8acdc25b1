#include "wire/remote_store.hpp"

#include <algorithm>
#include <array>
#include <random>
#include <vector>

#include "util/endian.hpp"
#include "util/log.hpp"
#include "wire/compression.hpp"
#include "wire/framing.hpp"

namespace memsync::wire {

namespace {
constexpr unsigned kHelloTimeoutMs = 10000;
constexpr auto kFirstBackoff = std::chrono::milliseconds(100);
constexpr auto kMaxBackoff = std::chrono::seconds(5);

std::string seconds_text(std::chrono::milliseconds ms) {
  return std::to_string(ms.count() / 1000) + (ms.count() % 1000 ? "." + std::to_string(ms.count() % 1000 / 100) : "") +
         " s";
}
}  // namespace

// One request, owned by its caller's stack frame until `done`. Its parts
// point into the caller's memory, which stays put while the caller waits,
// so the reader can send the request again after a reconnect.
struct RemoteStore::Pending {
  uint16_t type = 0;
  uint16_t flags = 0;
  std::array<std::span<const std::byte>, 2> parts{};
  size_t part_count = 0;
  // READ: where the data goes (memory, or a file and maybe its mapping,
  // which only the kernel may write: read(2), never memcpy) and how much.
  DirectRange into;
  uint32_t read_length = 0;
  uint64_t sent_on = 0;  // guarded by write_mu_: the connection generation it went out on
  bool done = false;     // guarded by mu_
  Status status;
  // Its own condition (waited on with mu_), so that a reply wakes only its
  // caller: with one shared condition every reply woke every waiting
  // thread (hundreds under nbdcopy), and the front server spent most of
  // its CPU in futex calls and context switches. Notified under mu_, so
  // the caller cannot return (and free this) before the notifier is done.
  std::condition_variable cv;
};

Result<std::shared_ptr<RemoteStore>> RemoteStore::connect(const RemoteTarget& target, const RemoteOptions& o) {
  return open([target] { return dial(target); }, o, target.to_string());
}

Result<std::shared_ptr<RemoteStore>> RemoteStore::open(std::unique_ptr<Channel> ch, const RemoteOptions& o,
                                                       std::string description) {
  std::shared_ptr<RemoteStore> s(new RemoteStore());
  s->conn_.channel = std::move(ch);
  return start(std::move(s), nullptr, o, std::move(description));
}

Result<std::shared_ptr<RemoteStore>> RemoteStore::open(Dialer dial, const RemoteOptions& o, std::string description) {
  auto c = dial();
  if (!c) return c.status();
  std::shared_ptr<RemoteStore> s(new RemoteStore());
  s->conn_ = std::move(c).value();
  return start(std::move(s), std::move(dial), o, std::move(description));
}

Result<std::shared_ptr<RemoteStore>> RemoteStore::start(std::shared_ptr<RemoteStore> s, Dialer dial,
                                                        const RemoteOptions& o, std::string description) {
  s->dial_ = std::move(dial);
  s->opts_ = o;
  s->description_ = std::move(description) + (o.urgent ? " [urgent]" : "");
  s->hello_.features = o.features & kFeaturesKnown;
  s->hello_.max_payload = std::clamp(o.max_payload, kMinPayload, kMaxPayload);
  s->hello_.max_inflight = std::clamp(o.max_inflight, 1u, kMaxInflight);
  s->hello_.name = o.name;
  if (s->dial_) {  // only a client that reconnects needs the server's fence
    std::random_device rd;
    while (s->hello_.client_id == 0) s->hello_.client_id = (uint64_t{rd()} << 32) | rd();
  }
  auto terms = s->handshake(*s->conn_.channel);
  if (!terms) return terms.status();
  s->terms_ = *terms;
  s->generation_ = 1;
  s->connected_ = true;
  RemoteStore* self = s.get();
  s->reader_ = std::jthread([self] { self->run_reader(); });
  return s;
}

Result<HelloReply> RemoteStore::handshake(Channel& ch) {
  auto body = encode_hello(hello_);
  // A peer that accepts and then says nothing must not hold us forever.
  ch.set_read_deadline(kHelloTimeoutMs);
  MEMSYNC_TRY(send_frame(ch, FrameHeader{kHello, 0, 0, 0}, {body}));
  auto h = read_header(ch, kHelloLimit);
  if (!h) return h.status().with_context("HELLO");
  std::vector<std::byte> payload(h->length);
  MEMSYNC_TRY(ch.read_exact(payload));
  if (h->type != (kHello | kReplyBit)) return Status::error(EPROTO, "memsync wire protocol: HELLO answered with another frame");
  if (h->is_error()) {
    auto e = decode_error(payload);
    if (!e) return e.status();
    return to_status(*e, "HELLO");
  }
  auto rep = decode_hello_reply(payload);
  if (!rep) return rep.status();
  MEMSYNC_TRY(check_hello_reply(hello_, *rep));
  ch.set_read_deadline(0);
  return *rep;
}

void RemoteStore::interrupt() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();  // ends a backoff wait
  std::lock_guard lock(write_mu_);
  if (conn_.channel) conn_.channel->stop();  // the reader wakes, fails what is left, and ends
}

RemoteStore::~RemoteStore() {
  interrupt();
  if (reader_.joinable()) reader_.join();
}

void RemoteStore::fail_all(const Status& st, bool permanent) {
  std::lock_guard lock(mu_);
  if (permanent) is_permanent_ = true;
  if (!is_permanent_ || permanent) failing_ = st;
  for (auto& [id, p] : pending_) {
    p->status = st;
    p->done = true;
    p->cv.notify_one();
  }
  pending_.clear();
  room_.notify_all();
}

Status RemoteStore::deliver(Channel& ch, const FrameHeader& h, Pending& p) {
  // Runs on the reader with the payload still unread: it must consume
  // exactly h.length bytes or fail the connection.
  if ((h.type & ~kReplyBit) != p.type) return Status::error(EPROTO, "memsync wire protocol: reply of the wrong type");
  if (h.is_error()) {
    std::vector<std::byte> payload(h.length);
    MEMSYNC_TRY(ch.read_exact(payload));
    auto e = decode_error(payload);
    if (!e) return e.status();
    p.status = to_status(*e, description_);  // frontends log it (the NBD server does)
    return Status::ok();
  }
  if (p.type == kRead) {
    if (h.flags & kFlagCompressed) {
      if (!(terms_.features & kFeatureLz4)) return Status::error(EPROTO, "memsync wire protocol: unasked compression");
      ByteBuffer packed(h.length);
      MEMSYNC_TRY(ch.read_exact(packed));
      if (p.into.memory) return decompress_payload(packed, std::span(p.into.memory, p.read_length));
      ByteBuffer raw(p.read_length);
      MEMSYNC_TRY(decompress_payload(packed, raw));
      // The file is the caller's: its failure is the request's, not the connection's.
      p.status = p.into.pwrite(raw, 0);
      return Status::ok();
    }
    if (h.length != p.read_length) return Status::error(EPROTO, "memsync wire protocol: READ reply of the wrong length");
    if (p.into.memory) return ch.read_exact(std::span(p.into.memory, p.read_length));
    Status file_error;
    MEMSYNC_TRY(ch.read_to_file(p.into.fd, p.into.file_offset, p.read_length, file_error, p.into.write_memory,
                                p.into.write_lock));
    if (!file_error) p.status = file_error;
    return Status::ok();
  }
  if (h.flags != 0) return Status::error(EPROTO, "memsync wire protocol: unexpected reply flags");
  if (h.length != 0) return Status::error(EPROTO, "memsync wire protocol: a reply with unexpected data");
  return Status::ok();
}

Status RemoteStore::read_replies(Channel& ch) {
  for (;;) {
    auto h = read_header(ch, terms_.max_payload + kFrameSlack);
    if (!h) return h.status();
    if (!h->is_reply()) return Status::error(EPROTO, "memsync wire protocol: the server sent a request");
    Pending* p = nullptr;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(h->id);
      if (it == pending_.end()) return Status::error(EPROTO, "memsync wire protocol: a reply to no request");
      p = it->second;
    }
    // The caller waits (its buffer is ours) until we mark it done below.
    MEMSYNC_TRY(deliver(ch, *h, *p));
    // The full read-ahead stays on, although part of a large payload then
    // passes through our buffer: reading only the next header after one
    // (as the NBD server does for WRITE) tripled the CPU of direct reads
    // (one wake-up per arriving segment instead of one per buffer) and
    // made no difference to reads into files.
    std::lock_guard lock(mu_);
    pending_.erase(h->id);
    p->done = true;
    p->cv.notify_one();
    if (room_waiters_ > 0) room_.notify_one();  // a slot opened
  }
}

bool RemoteStore::stopping() {
  std::lock_guard lock(mu_);
  return stopping_;
}

void RemoteStore::run_reader() {
  for (;;) {
    Status lost = read_replies(*conn_.channel);
    {
      std::lock_guard lock(write_mu_);
      connected_ = false;
    }
    if (stopping()) {
      fail_all(Status::error(ECANCELED, description_ + ": given up (shutting down)"), true);
      return;
    }
    Status why = Status::error(ECONNRESET, description_ + ": connection lost: " + lost.message());
    if (!dial_) {
      log::warn(why.message());
      fail_all(why, true);
      return;
    }
    log::warn(why.message() + "; reconnecting");
    if (!reconnect(why)) return;
    log::warn(description_ + ": reconnected");
  }
}

bool RemoteStore::reconnect(const Status& why) {
  auto down_since = std::chrono::steady_clock::now();
  auto backoff = std::chrono::milliseconds(kFirstBackoff);
  bool timed_out = false;
  Status last = why;
  for (unsigned attempt = 1;; ++attempt) {
    bool permanent = false;
    Status st = try_reconnect(permanent);
    if (st) return true;
    if (stopping()) {
      fail_all(Status::error(ECANCELED, description_ + ": given up (shutting down)"), true);
      return false;
    }
    if (permanent) {
      log::error(st.message());
      fail_all(st, true);
      return false;
    }
    last = st;
    if (attempt == 1 || log::verbosity() >= 1) log::info(description_ + ": cannot reconnect yet: " + st.message());
    auto down_for = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - down_since);
    if (!timed_out && opts_.outage_timeout.count() > 0 && down_for >= opts_.outage_timeout) {
      timed_out = true;
      Status gone = Status::error(ETIMEDOUT, description_ + ": no connection for " + seconds_text(down_for) +
                                                 " (" + last.message() + ")");
      log::error(gone.message() + "; failing requests until it is back");
      fail_all(gone, false);
    }
    // Sleep the backoff, but wake for the outage deadline, not after it.
    auto pause = backoff;
    if (!timed_out && opts_.outage_timeout.count() > 0)
      pause = std::clamp<std::chrono::milliseconds>(opts_.outage_timeout - down_for, std::chrono::milliseconds(1), backoff);
    std::unique_lock lock(mu_);
    stop_cv_.wait_for(lock, pause, [&] { return stopping_; });
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
  }
}

Status RemoteStore::try_reconnect(bool& permanent) {
  auto c = dial_();
  if (!c) return c.status();
  {
    std::lock_guard lock(write_mu_);
    if (stopping()) return Status::error(ECONNRESET, "closed");
    conn_ = std::move(c).value();  // stop() can now reach the handshake
  }
  auto rep = handshake(*conn_.channel);
  if (!rep) return rep.status();
  // Resending into a different store would be silent corruption.
  std::string changed;
  if (rep->store_id != terms_.store_id) changed = "its content is gone: the server restarted with a new memory store";
  else if (rep->size != terms_.size) changed = "its size changed";
  else if (rep->read_only != terms_.read_only) changed = "it became " + std::string(rep->read_only ? "read-only" : "writable");
  else if (rep->features != terms_.features || rep->max_payload < terms_.max_payload) changed = "its terms changed";
  if (!changed.empty()) {
    permanent = true;
    return Status::error(EIO, description_ + ": the remote store changed, " + changed + "; giving up");
  }
  std::lock_guard lock(write_mu_);
  ++generation_;
  connected_ = true;
  std::vector<std::pair<uint64_t, Pending*>> again;
  {
    std::lock_guard state(mu_);
    if (!is_permanent_) failing_ = Status::ok();
    again.assign(pending_.begin(), pending_.end());  // in id order: the order they were asked
  }
  for (auto& [id, p] : again) send_locked(id, *p);
  return Status::ok();
}

void RemoteStore::send_locked(uint64_t id, Pending& p) {
  if (!connected_ || p.sent_on == generation_) return;  // the reader sends it after reconnecting
  p.sent_on = generation_;
  Status st = send_frame(*conn_.channel, FrameHeader{p.type, p.flags, id, 0},
                         std::span<const std::span<const std::byte>>(p.parts.data(), p.part_count));
  // The reader sees the stopped channel, reconnects and sends it again.
  if (!st) conn_.channel->stop();
}

void RemoteStore::submit(Pending& p) {
  if (opts_.urgent) p.flags |= kFlagUrgent;
  uint64_t id;
  {
    std::unique_lock lock(mu_);
    ++room_waiters_;
    room_.wait(lock, [&] { return pending_.size() < terms_.max_inflight || !failing_; });
    --room_waiters_;
    if (!failing_) {
      p.status = failing_;
      p.done = true;
      return;
    }
    id = next_id_++;
    pending_[id] = &p;
  }
  std::lock_guard lock(write_mu_);
  send_locked(id, p);
}

Status RemoteStore::wait(Pending& p) {
  std::unique_lock lock(mu_);
  p.cv.wait(lock, [&] { return p.done; });
  return p.status;
}

Status RemoteStore::call(uint16_t type, uint16_t flags, std::initializer_list<std::span<const std::byte>> parts) {
  Pending p;
  p.type = type;
  p.flags = flags;
  for (auto& part : parts) p.parts[p.part_count++] = part;
  submit(p);
  return wait(p);
}

Status RemoteStore::read_at(std::span<std::byte> buf, uint64_t offset) {
  DirectRange into;
  into.memory = buf.data();
  return read_into(into, offset, buf.size());
}

// Requests larger than max_payload go out as several, all in flight at
// once (one round trip, not one per part), and are waited for together.
Status RemoteStore::read_into(const DirectRange& dst, uint64_t offset, uint64_t length) {
  auto part_of = [&](uint64_t done, uint32_t n, std::span<const std::byte> range, Pending& p) {
    p.type = kRead;
    p.parts[0] = range;
    p.part_count = 1;
    p.into = dst;
    if (p.into.memory) p.into.memory += done;
    p.into.file_offset += done;
    if (p.into.write_memory) p.into.write_memory += done;
    p.read_length = n;
    submit(p);
  };
  if (length <= terms_.max_payload) {
    auto req = encode_range(Range{offset, static_cast<uint32_t>(length)});
    Pending p;
    part_of(0, static_cast<uint32_t>(length), req, p);
    return wait(p);
  }
  size_t count = static_cast<size_t>((length + terms_.max_payload - 1) / terms_.max_payload);
  std::vector<Pending> parts(count);  // never resized: the reader holds pointers
  std::vector<std::vector<std::byte>> ranges(count);
  for (size_t i = 0; i < count; ++i) {
    uint64_t done = uint64_t{i} * terms_.max_payload;
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(length - done, terms_.max_payload));
    ranges[i] = encode_range(Range{offset + done, n});
    part_of(done, n, ranges[i], parts[i]);
  }
  Status first;
  for (auto& p : parts)
    if (Status st = wait(p); !st && first) first = st;
  return first;
}

Status RemoteStore::write_at(std::span<const std::byte> buf, uint64_t offset) {
  if (buf.size() <= terms_.max_payload) {  // the common case: one frame, no vectors of parts
    ByteWriter head;
    head.u64(offset);
    ByteBuffer packed;
    if (terms_.features & kFeatureLz4) packed = gate_.compress(buf);
    Status st = packed.empty() ? call(kWrite, 0, {head.data(), buf}) : call(kWrite, kFlagCompressed, {head.data(), packed});
    unsynced_ = true;  // after the reply, as below
    return st;
  }
  size_t count = std::max<size_t>(1, (buf.size() + terms_.max_payload - 1) / terms_.max_payload);
  std::vector<Pending> parts(count);  // never resized: the reader holds pointers
  std::vector<ByteWriter> heads(count);
  std::vector<ByteBuffer> packed(count);
  for (size_t i = 0; i < count; ++i) {
    size_t done = i * terms_.max_payload;
    auto chunk = buf.subspan(done, std::min<size_t>(buf.size() - done, terms_.max_payload));
    heads[i].u64(offset + done);
    if (terms_.features & kFeatureLz4) packed[i] = gate_.compress(chunk);
    Pending& p = parts[i];
    p.type = kWrite;
    p.flags = packed[i].empty() ? 0 : kFlagCompressed;
    p.parts[0] = heads[i].data();
    p.parts[1] = packed[i].empty() ? chunk : packed[i].span();
    p.part_count = 2;
    submit(p);
  }
  Status first;
  for (auto& p : parts)
    if (Status st = wait(p); !st && first) first = st;
  // After the replies: a sync that starts later must not skip; one that
  // raced them either covered this write or leaves the flag set for the next.
  unsynced_ = true;
  return first;
}

Status RemoteStore::sync() {
  // Nothing written since the last sync: nothing to make durable, and no
  // reason to wait for a server that may be gone (a shutdown's final sync).
  if (!unsynced_.exchange(false)) return Status::ok();
  Status st = call(kSync, 0, {});
  if (!st) unsynced_ = true;
  return st;
}

Status RemoteStore::zero_range(uint16_t type, uint64_t offset, uint64_t length) {
  for (uint64_t done = 0; done < length;) {
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(length - done, 1u << 30));
    auto req = encode_range(Range{offset + done, n});
    Status st = call(type, 0, {req});
    unsynced_ = true;  // after the reply, as in write_at
    MEMSYNC_TRY(st);
    done += n;
  }
  return Status::ok();
}

Status RemoteStore::trim(uint64_t offset, uint64_t length) {
  if (!(terms_.features & kFeatureTrim)) return Store::trim(offset, length);
  return zero_range(kTrim, offset, length);
}

Status RemoteStore::write_zeroes(uint64_t offset, uint64_t length, bool may_punch) {
  if (!(terms_.features & kFeatureTrim)) return Store::write_zeroes(offset, length, may_punch);
  return zero_range(kWriteZeroes, offset, length);
}

}  // namespace memsync::wire
