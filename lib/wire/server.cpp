#include "wire/server.hpp"

#include <array>
#include <condition_variable>
#include <deque>
#include <random>

#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <vector>

#include "util/endian.hpp"
#include "util/log.hpp"
#include "wire/compression.hpp"
#include "wire/framing.hpp"

namespace memsync::wire {
namespace {

constexpr unsigned kHelloTimeoutMs = 10000;

struct Job {
  FrameHeader h;
  ByteBuffer payload;
};

}  // namespace

// One connection after HELLO: a reader (the serving thread), workers, and
// the write lock that keeps reply frames whole.
class Session {
 public:
  Session(Channel& ch, Store& store, const WireServerOptions& opts, const HelloReply& terms)
      : ch_(ch), store_(store), opts_(opts), terms_(terms) {}

  Status run() {
    std::vector<std::jthread> workers;
    for (unsigned i = 0; i < std::max(1u, opts_.threads); ++i) workers.emplace_back([this] { work(); });
    Status st = read_requests();
    {
      std::lock_guard lock(mu_);
      reading_done_ = true;
    }
    cv_.notify_all();
    workers.clear();  // they finish the queue, then exit
    return st;
  }

 private:
  Status read_requests() {
    for (;;) {
      {
        std::unique_lock lock(mu_);
        room_.wait(lock, [&] { return queued_ + running_ < terms_.max_inflight || broken_; });
        if (broken_) return Status::ok();
      }
      auto h = read_header(ch_, terms_.max_payload + kFrameSlack);
      if (!h) {
        if (!ch_.stopped()) drop_queued();  // lost, not stopped: nobody will read the replies
        return ch_.clean_eof() || ch_.stopped() ? Status::ok() : h.status();
      }
      if (h->is_reply()) return Status::error(EPROTO, "memsync wire protocol: the client sent a reply frame");
      if (h->type == kHello) return Status::error(EPROTO, "memsync wire protocol: a second HELLO");
      Job job{*h, ByteBuffer(h->length)};
      MEMSYNC_TRY(ch_.read_exact(job.payload));
      {
        std::lock_guard lock(mu_);
        (job.h.flags & kFlagUrgent ? urgent_ : background_).push_back(std::move(job));
        ++queued_;
      }
      cv_.notify_one();
    }
  }

  // The client will send these again on its next connection.
  void drop_queued() {
    std::lock_guard lock(mu_);
    queued_ -= static_cast<unsigned>(urgent_.size() + background_.size());
    urgent_.clear();
    background_.clear();
    room_.notify_all();
  }

  void work() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !urgent_.empty() || !background_.empty() || reading_done_; });
        auto& q = !urgent_.empty() ? urgent_ : background_;
        if (q.empty()) return;  // reading is done and nothing is left
        job = std::move(q.front());
        q.pop_front();
        --queued_;
        ++running_;
      }
      Status sent = execute(job);
      {
        std::lock_guard lock(mu_);
        --running_;
        if (!sent) broken_ = true;
      }
      room_.notify_all();
      if (!sent) {
        log::info("cannot send a reply: " + sent.message());
        ch_.stop();
      }
    }
  }

  Status reply(const FrameHeader& req, std::initializer_list<std::span<const std::byte>> parts, uint16_t flags = 0) {
    std::lock_guard lock(write_mu_);
    return send_frame(ch_, FrameHeader{static_cast<uint16_t>(req.type | kReplyBit), flags, req.id, 0}, parts);
  }

  Status reply_error(const FrameHeader& req, const Status& st) {
    auto payload = encode_error(ErrorReply{static_cast<uint32_t>(st.code() > 0 ? st.code() : EIO), st.message()});
    if (log::verbosity() >= 2) log::debug("request " + std::to_string(req.id) + " failed: " + st.message());
    return reply(req, {payload}, kFlagError);
  }

  bool negotiated(uint64_t feature) const { return terms_.features & feature; }

  // Executes one request and sends its reply; only a failed send is returned.
  Status execute(Job& job) {
    const FrameHeader& h = job.h;
    if (h.flags & ~kRequestFlags) return reply_error(h, Status::invalid("unknown flags " + std::to_string(h.flags)));
    switch (h.type) {
      case kRead: return do_read(job);
      case kWrite: return do_write(job);
      case kSize: {
        ByteWriter w;
        w.u64(store_.size());
        return reply(h, {w.data()});
      }
      case kSync: {
        Status st = store_.sync();
        return st ? reply(h, {}) : reply_error(h, st);
      }
      case kTrim:
      case kWriteZeroes: return do_zero(job);
      default:
        return reply_error(h, Status::unsupported("request type " + std::to_string(h.type) + " is not supported"));
    }
  }

  Status do_read(Job& job) {
    auto rg = decode_range(job.payload);
    if (!rg) return reply_error(job.h, rg.status());
    if (Status st = check_range(*rg, store_.size(), terms_.max_payload); !st) return reply_error(job.h, st);
    // The store's own bytes where it has them: memory goes out as it is,
    // a file by sendfile unless this payload is to be compressed.
    const bool lz4 = negotiated(kFeatureLz4) && gate_.try_now();
    Store::DirectRange direct;
    const bool have_direct = store_.direct_range(rg->offset, rg->length, Store::Access::kRead, direct);
    if (have_direct && direct.memory) return send_read(job.h, std::span(direct.memory, rg->length), lz4);
    if (have_direct && direct.fd >= 0 && !lz4) {
      std::array<std::byte, kHeaderSize> head;
      encode_header(FrameHeader{static_cast<uint16_t>(kRead | kReplyBit), 0, job.h.id, rg->length}, head);
      std::lock_guard lock(write_mu_);
      return ch_.write_file(head, direct.fd, direct.file_offset, rg->length);
    }
    ByteBuffer data(rg->length);
    if (Status st = store_.read_at(data, rg->offset); !st) return reply_error(job.h, st);
    return send_read(job.h, data, lz4);
  }

  Status send_read(const FrameHeader& req, std::span<const std::byte> data, bool lz4) {
    if (lz4) {
      auto packed = gate_.attempt(data);
      if (!packed.empty()) return reply(req, {packed}, kFlagCompressed);
    }
    return reply(req, {data});
  }

  Status do_write(Job& job) {
    const FrameHeader& h = job.h;
    if (job.payload.size() < 8) return reply_error(h, Status::invalid("WRITE without an offset"));
    uint64_t offset = load_be64(job.payload.data());
    std::span<const std::byte> data(job.payload.data() + 8, job.payload.size() - 8);
    ByteBuffer unpacked;
    if (h.flags & kFlagCompressed) {
      if (!negotiated(kFeatureLz4)) return reply_error(h, Status::invalid("COMPRESSED without the LZ4 feature"));
      if (data.size() < 4) return reply_error(h, Status::invalid("compressed WRITE without its length"));
      uint32_t raw = load_be32(data.data());
      if (raw == 0 || raw > terms_.max_payload)
        return reply_error(h, Status::invalid("compressed WRITE of " + std::to_string(raw) + " bytes"));
      unpacked = ByteBuffer(raw);
      if (Status st = decompress_payload(data, unpacked); !st) return reply_error(h, Status::invalid(st.message()));
      data = unpacked;
    }
    if (Status st = check_range(Range{offset, static_cast<uint32_t>(data.size())}, store_.size(), terms_.max_payload); !st)
      return reply_error(h, st);
    if (terms_.read_only) return reply_error(h, Status::error(EROFS, "the store is read-only"));
    if (Status st = store_.write_at(data, offset); !st) return reply_error(h, st);
    if (h.flags & kFlagFua) {
      if (Status st = store_.sync(); !st) return reply_error(h, st);
    }
    return reply(h, {});
  }

  Status do_zero(Job& job) {
    const FrameHeader& h = job.h;
    if (!negotiated(kFeatureTrim)) return reply_error(h, Status::unsupported("TRIM was not negotiated"));
    auto rg = decode_range(job.payload);
    if (!rg) return reply_error(h, rg.status());
    if (Status st = check_range(*rg, store_.size(), UINT32_MAX); !st) return reply_error(h, st);
    if (terms_.read_only) return reply_error(h, Status::error(EROFS, "the store is read-only"));
    Status st = h.type == kTrim ? store_.trim(rg->offset, rg->length) : store_.write_zeroes(rg->offset, rg->length, true);
    return st ? reply(h, {}) : reply_error(h, st);
  }

  Channel& ch_;
  Store& store_;
  const WireServerOptions& opts_;
  const HelloReply terms_;
  CompressionGate gate_;  // our replies' LZ4 attempts
  std::mutex mu_;
  std::condition_variable cv_, room_;
  std::deque<Job> urgent_, background_;
  unsigned queued_ = 0, running_ = 0;
  bool reading_done_ = false, broken_ = false;
  std::mutex write_mu_;

 public:
  // The client came back on another connection: read nothing more here,
  // drop what is queued. REQUIRES: the channel is alive (the caller holds
  // the server's lock, under which a session unregisters before its end).
  void fence() {
    drop_queued();
    ch_.stop();
  }
  // Waits until no request of this session is executing.
  void wait_idle() {
    std::unique_lock lock(mu_);
    room_.wait(lock, [&] { return running_ == 0 && (queued_ == 0 || reading_done_); });
  }
};

WireServer::WireServer(std::shared_ptr<Store> store, WireServerOptions opts)
    : store_(std::move(store)),
      opts_(std::move(opts)),
      acceptor_([this](Channel& ch) { return serve(ch); }, opts_.max_connections) {
  if (store_->is_volatile()) {
    std::random_device rd;
    while (store_id_ == 0) store_id_ = (uint64_t{rd()} << 32) | rd();
  }
}

WireServer::~WireServer() { stop(); }

void WireServer::stop() {
  stopping_ = true;
  {
    std::lock_guard lock(mu_);
    for (Channel* c : channels_) c->stop();
  }
  acceptor_.stop();
}

void WireServer::adopt(UniqueFd conn) { acceptor_.adopt(std::move(conn)); }

Status WireServer::run(std::vector<UniqueFd> listeners) {
  MEMSYNC_TRY(acceptor_.run(std::move(listeners)));
  Status st = store_->sync();
  if (!st) return st.with_context("final sync");
  return Status::ok();
}

Status WireServer::serve(Channel& ch) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Status::ok();
    channels_.push_back(&ch);
  }
  struct Unregister {
    WireServer* s;
    Channel* c;
    ~Unregister() {
      std::lock_guard lock(s->mu_);
      std::erase(s->channels_, c);
    }
  } unregister{this, &ch};

  if (opts_.tls) {
    // A plaintext client would only see its connection reset: if its first
    // bytes are a wire frame rather than a TLS ClientHello, say why instead.
    std::array<std::byte, 4> first{};
    timeval tv{10, 0};
    (void)::setsockopt(ch.write_fd(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::recv(ch.write_fd(), first.data(), first.size(), MSG_PEEK | MSG_WAITALL) == 4 && load_be32(first.data()) == kMagic) {
      auto err = encode_error(ErrorReply{EACCES, "this server speaks TLS only: connect with TLS (e.g. tls-psk= or tls-ca=)"});
      (void)send_frame(ch, FrameHeader{static_cast<uint16_t>(kHello | kReplyBit), kFlagError, 0, 0}, {err});
      return Status::error(EACCES, "a client without TLS was refused");
    }
    auto [in, out] = ch.release_fds();
    auto accepted = opts_.tls->accept(std::move(in), std::move(out));
    if (!accepted) return accepted.status();
    ch.upgrade(std::move(accepted->plain), std::move(accepted->relay));
  }
  // A client that connects and never says HELLO (an NBD client pointed
  // here by mistake) must not hold a connection slot forever.
  ch.set_read_deadline(kHelloTimeoutMs);
  auto h = read_header(ch, kHelloLimit);
  if (!h) return ch.clean_eof() ? Status::ok() : h.status();
  if (h->type != kHello) return Status::error(EPROTO, "memsync wire protocol: the first frame is not HELLO");
  std::vector<std::byte> payload(h->length);
  MEMSYNC_TRY(ch.read_exact(payload));
  auto hello = decode_hello(payload);
  if (!hello) return hello.status();
  ch.set_read_deadline(0);
  ServerTerms terms;
  terms.features = opts_.features;
  terms.max_payload = opts_.max_payload;
  terms.max_inflight = opts_.max_inflight;
  terms.size = store_->size();
  terms.chunk_size = std::max<uint32_t>(4096, store_->block_size());
  terms.read_only = opts_.read_only || store_->is_read_only();
  terms.store_id = store_id_;
  auto rep = negotiate(*hello, terms);
  FrameHeader back{static_cast<uint16_t>(kHello | kReplyBit), 0, h->id, 0};
  if (!rep) {
    auto err = encode_error(ErrorReply{static_cast<uint32_t>(rep.status().code()), rep.status().message()});
    back.flags = kFlagError;
    (void)send_frame(ch, back, {err});
    return rep.status();
  }
  auto session = std::make_shared<Session>(ch, *store_, opts_, *rep);
  if (hello->client_id != 0) {
    // Fence the client's older connections before answering (see Hello).
    std::vector<std::shared_ptr<Session>> older;
    {
      std::lock_guard lock(mu_);
      for (auto& live : sessions_)
        if (live.client_id == hello->client_id) {
          live.session->fence();
          older.push_back(live.session);
        }
      sessions_.push_back(Live{hello->client_id, session});
    }
    for (auto& s : older) s->wait_idle();
  }
  struct Forget {
    WireServer* s;
    Session* session;
    ~Forget() {
      std::lock_guard lock(s->mu_);
      std::erase_if(s->sessions_, [&](const Live& l) { return l.session.get() == session; });
    }
  } forget{this, session.get()};
  auto body = encode_hello_reply(*rep);
  MEMSYNC_TRY(send_frame(ch, back, {body}));
  log::info("wire session with '" + hello->name + "': max payload " + std::to_string(rep->max_payload) +
            ", features " + std::to_string(rep->features));
  return session->run();
}

}  // namespace memsync::wire
