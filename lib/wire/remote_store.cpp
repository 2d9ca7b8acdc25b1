#include "wire/remote_store.hpp"

#include <algorithm>
#include <vector>

#include "util/endian.hpp"
#include "util/log.hpp"
#include "wire/compression.hpp"
#include "wire/framing.hpp"

namespace memsync::wire {

namespace {
constexpr unsigned kHelloTimeoutMs = 10000;
}  // namespace

struct RemoteStore::Pending {
  uint16_t type = 0;
  std::span<std::byte> into;
  bool done = false;
  Status status;
};

Result<std::shared_ptr<RemoteStore>> RemoteStore::open(std::unique_ptr<Channel> ch, const RemoteOptions& o,
                                                       std::string description) {
  std::shared_ptr<RemoteStore> s(new RemoteStore());
  s->ch_ = std::move(ch);
  s->description_ = std::move(description);
  Hello hello;
  hello.features = o.features & kFeaturesKnown;
  hello.max_payload = std::clamp(o.max_payload, kMinPayload, kMaxPayload);
  hello.max_inflight = std::clamp(o.max_inflight, 1u, kMaxInflight);
  hello.name = o.name;
  auto body = encode_hello(hello);
  // A peer that accepts and then says nothing must not hold us forever.
  s->ch_->set_read_deadline(kHelloTimeoutMs);
  MEMSYNC_TRY(send_frame(*s->ch_, FrameHeader{kHello, 0, 0, 0}, {body}));
  auto h = read_header(*s->ch_, kHelloLimit);
  if (!h) return h.status().with_context("HELLO");
  std::vector<std::byte> payload(h->length);
  MEMSYNC_TRY(s->ch_->read_exact(payload));
  if (h->type != (kHello | kReplyBit)) return Status::error(EPROTO, "memsync wire protocol: HELLO answered with another frame");
  if (h->is_error()) {
    auto e = decode_error(payload);
    if (!e) return e.status();
    return to_status(*e, "HELLO");
  }
  auto rep = decode_hello_reply(payload);
  if (!rep) return rep.status();
  MEMSYNC_TRY(check_hello_reply(hello, *rep));
  s->ch_->set_read_deadline(0);
  s->terms_ = *rep;
  RemoteStore* self = s.get();
  s->reader_ = std::jthread([self] { self->read_replies(); });
  return s;
}

RemoteStore::~RemoteStore() {
  ch_->stop();  // the reader wakes, fails what is left, and ends
  if (reader_.joinable()) reader_.join();
}

void RemoteStore::fail_all(const Status& st) {
  std::lock_guard lock(mu_);
  if (is_broken_) return;
  is_broken_ = true;
  broken_ = st;
  for (auto& [id, p] : pending_) {
    p->status = st;
    p->done = true;
  }
  pending_.clear();
  cv_.notify_all();
}

Status RemoteStore::deliver(const FrameHeader& h, Pending& p) {
  // Runs on the reader with the payload still unread: it must consume
  // exactly h.length bytes or fail the connection.
  if ((h.type & ~kReplyBit) != p.type) return Status::error(EPROTO, "memsync wire protocol: reply of the wrong type");
  if (h.is_error()) {
    std::vector<std::byte> payload(h.length);
    MEMSYNC_TRY(ch_->read_exact(payload));
    auto e = decode_error(payload);
    if (!e) return e.status();
    p.status = to_status(*e, description_);
    return Status::ok();
  }
  if (p.type == kRead) {
    if (h.flags & kFlagCompressed) {
      if (!(terms_.features & kFeatureLz4)) return Status::error(EPROTO, "memsync wire protocol: unasked compression");
      std::vector<std::byte> packed(h.length);
      MEMSYNC_TRY(ch_->read_exact(packed));
      return decompress_payload(packed, p.into);
    }
    if (h.length != p.into.size()) return Status::error(EPROTO, "memsync wire protocol: READ reply of the wrong length");
    return ch_->read_exact(p.into);
  }
  if (h.flags != 0) return Status::error(EPROTO, "memsync wire protocol: unexpected reply flags");
  if (h.length != 0) return Status::error(EPROTO, "memsync wire protocol: a reply with unexpected data");
  return Status::ok();
}

void RemoteStore::read_replies() {
  for (;;) {
    auto h = read_header(*ch_, terms_.max_payload + kFrameSlack);
    Status st = h ? Status::ok() : h.status();
    if (st && !h->is_reply()) st = Status::error(EPROTO, "memsync wire protocol: the server sent a request");
    Pending* p = nullptr;
    if (st) {
      std::lock_guard lock(mu_);
      auto it = pending_.find(h->id);
      if (it == pending_.end()) st = Status::error(EPROTO, "memsync wire protocol: a reply to no request");
      else p = it->second;
    }
    // The caller waits (its buffer is ours) until we mark it done below.
    if (st) st = deliver(*h, *p);
    if (!st) {
      if (!ch_->stopped()) log::warn(description_ + ": connection lost: " + st.message());
      fail_all(Status::error(ECONNRESET, description_ + ": connection lost: " + st.message()));
      return;
    }
    std::lock_guard lock(mu_);
    pending_.erase(h->id);
    p->done = true;
    cv_.notify_all();
  }
}

Status RemoteStore::call(uint16_t type, uint16_t flags, std::initializer_list<std::span<const std::byte>> parts,
                         std::span<std::byte> into) {
  Pending p;
  p.type = type;
  p.into = into;
  uint64_t id;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return pending_.size() < terms_.max_inflight || is_broken_; });
    if (is_broken_) return broken_;
    id = next_id_++;
    pending_[id] = &p;
  }
  Status sent;
  {
    std::lock_guard lock(write_mu_);
    sent = send_frame(*ch_, FrameHeader{type, flags, id, 0}, parts);
  }
  if (!sent) fail_all(Status::error(ECONNRESET, description_ + ": connection lost: " + sent.message()));
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return p.done; });
  return p.status;
}

Status RemoteStore::read_at(std::span<std::byte> buf, uint64_t offset) {
  for (size_t done = 0; done < buf.size();) {
    uint32_t n = static_cast<uint32_t>(std::min<size_t>(buf.size() - done, terms_.max_payload));
    auto req = encode_range(Range{offset + done, n});
    MEMSYNC_TRY(call(kRead, 0, {req}, buf.subspan(done, n)));
    done += n;
  }
  return Status::ok();
}

Status RemoteStore::write_at(std::span<const std::byte> buf, uint64_t offset) {
  for (size_t done = 0; done < buf.size();) {
    size_t n = std::min<size_t>(buf.size() - done, terms_.max_payload);
    auto chunk = buf.subspan(done, n);
    ByteWriter head;
    head.u64(offset + done);
    std::vector<std::byte> packed;
    if (terms_.features & kFeatureLz4) packed = compress_payload(chunk);
    if (!packed.empty()) MEMSYNC_TRY(call(kWrite, kFlagCompressed, {head.data(), packed}));
    else MEMSYNC_TRY(call(kWrite, 0, {head.data(), chunk}));
    done += n;
  }
  return Status::ok();
}

Status RemoteStore::sync() { return call(kSync, 0, {}); }

Status RemoteStore::zero_range(uint16_t type, uint64_t offset, uint64_t length) {
  for (uint64_t done = 0; done < length;) {
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(length - done, 1u << 30));
    auto req = encode_range(Range{offset + done, n});
    MEMSYNC_TRY(call(type, 0, {req}));
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
