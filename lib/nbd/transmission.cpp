#include "nbd/transmission.hpp"

#include <algorithm>
#include <array>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "nbd/protocol.hpp"
#include "nbd/reply_batch.hpp"
#include "nbd/request.hpp"
#include "util/endian.hpp"
#include "util/log.hpp"

namespace memsync::nbd {
namespace {

// Reads of at least this size look for holes first (when the store answers
// that cheaply), so sparse regions go out as NBD_REPLY_TYPE_OFFSET_HOLE.
constexpr uint32_t kHoleScanThreshold = 64 * 1024;
// A worker keeps a buffer this large between requests; bigger ones are freed.
constexpr size_t kKeepBuffer = 4 << 20;
// A worker that finds more whole requests already buffered takes up to this
// many at once (and this many payload bytes), runs them in order and sends
// their replies in one write: fewer lock handoffs and system calls per
// request when requests are small and many (4K random I/O). Requests that
// are not yet buffered are never waited for, so a lone request is not held.
constexpr size_t kMaxBatch = 8;
constexpr size_t kMaxBatchBytes = 256 * 1024;
// WRITE payloads this large are taken straight from the socket; after one,
// only the next header is read ahead (Channel::limit_read_ahead).
constexpr uint32_t kLargeWrite = 64 * 1024;
// File reads at least this large go out by sendfile (no copy through our
// buffers); smaller ones are cheaper as pread + the batch's single writev,
// since sendfile costs two system calls per reply and cannot be batched.
constexpr uint32_t kSendfileThreshold = 64 * 1024;

struct Buffer {
  std::unique_ptr<std::byte[]> data;
  size_t capacity = 0;
  std::span<std::byte> get(size_t n) {
    if (n > capacity) {
      data = std::make_unique_for_overwrite<std::byte[]>(n);
      capacity = n;
    }
    return {data.get(), n};
  }
  void trim() {
    if (capacity > kKeepBuffer) {
      data.reset();
      capacity = 0;
    }
  }
};

// One request as read, with its verdict and its payload or read buffer.
struct Job {
  Request req;
  Verdict verdict;
  bool in_place = false;  // a WRITE payload already went into the store
  Buffer buf;
};

class Transmission {
 public:
  Transmission(Channel& ch, Store& store, const ExportConfig& cfg, const Session& s)
      : ch_(ch), store_(store), s_(s) {
    limits_.export_size = store.size();
    limits_.max_payload = cfg.max_payload;
    limits_.min_block = cfg.min_block;
    limits_.transmission_flags = s.transmission_flags;
    limits_.structured_replies = s.structured_replies;
    limits_.base_allocation = s.base_allocation;
  }

  Status run(unsigned threads) {
    threads = std::max(1u, threads);
    {
      std::vector<std::jthread> workers;
      for (unsigned i = 1; i < threads; ++i) workers.emplace_back([this] { worker(); });
      worker();
    }  // joins: every request read has been answered
    return fatal_;
  }

 private:
  enum class Got { Request, Done };

  void worker();
  // Under the read lock: one blocking read, then whatever is already buffered.
  size_t next_batch(std::array<Job, kMaxBatch>& jobs);
  Got read_one(Job& job);
  bool next_request_joins(size_t batch_bytes) const;
  bool quick(uint16_t type, uint64_t offset, uint32_t length) const;
  Status execute(Job& job, ReplyBatch& out);
  void finish(Status st) {  // REQUIRES: read lock held
    done_ = true;
    if (!st.is_ok() && fatal_.is_ok()) fatal_ = st;
  }

  // The header of a successful READ reply carrying all req.length bytes:
  // simple, or one structured OFFSET_DATA chunk marked DONE. Written into h.
  static constexpr size_t kDataHeaderMax = 28;
  std::span<const std::byte> data_header(const Request& req, std::byte (&h)[kDataHeaderMax]) const;
  void add_simple(ReplyBatch& out, uint64_t cookie, uint32_t error, std::span<const std::byte> data = {});
  void add_error(ReplyBatch& out, const Request& req, uint32_t error, const std::string& msg);
  void add_read(ReplyBatch& out, const Request& req, std::span<const std::byte> data, const std::vector<Extent>& map);
  Status do_read(Job& job, ReplyBatch& out);
  void do_block_status(const Request& req, ReplyBatch& out);

  Channel& ch_;
  Store& store_;
  const Session& s_;
  RequestLimits limits_;
  std::mutex read_mu_;
  bool done_ = false;  // guarded by read_mu_
  Status fatal_;       // guarded by read_mu_
};

// Whether the next request may join a batch of batch_bytes: it is wholly
// in the buffer (never waited for), the batch stays under kMaxBatchBytes,
// and it is quick.
bool Transmission::next_request_joins(size_t batch_bytes) const {
  auto b = ch_.peek();
  if (b.size() < kRequestHeaderSize) return false;
  uint16_t type = load_be16(b.data() + 6);
  uint32_t length = load_be32(b.data() + 24);
  if (type == kCmdDisc) return true;
  size_t need = kRequestHeaderSize + (type == kCmdWrite ? length : 0);
  size_t cost = (type == kCmdRead || type == kCmdWrite) ? length : 0;
  return b.size() >= need && batch_bytes + cost <= kMaxBatchBytes && quick(type, load_be64(b.data() + 16), length);
}

bool Transmission::quick(uint16_t type, uint64_t offset, uint32_t length) const {
  return (type != kCmdRead && type != kCmdWrite) || store_.quick(offset, length);
}

size_t Transmission::next_batch(std::array<Job, kMaxBatch>& jobs) {
  std::lock_guard lock(read_mu_);
  size_t n = 0, bytes = 0;
  while (n < kMaxBatch && !done_) {
    if (read_one(jobs[n]) == Got::Done) break;
    const Request& r = jobs[n].req;
    if (r.type == kCmdRead || r.type == kCmdWrite) bytes += r.length;
    ++n;
    // Only quick requests share a worker (Store::quick): the ones behind a
    // round trip to a remote go to idle workers instead of waiting for it.
    // Random 4 KiB reads of a remote at depth 32 went from 1000 to the
    // link's 3000 IOPS at 10 ms. next_request_joins() asks it of the next
    // request; of the first, only when another could join it.
    if (n == kMaxBatch || !next_request_joins(bytes) || (n == 1 && !quick(r.type, r.offset, r.length))) break;
  }
  return n;
}

Transmission::Got Transmission::read_one(Job& job) {
  job.in_place = false;
  std::byte hdr[kRequestHeaderSize];
  Status st = ch_.read_exact(hdr);
  if (!st) {
    // A clean EOF between requests or a server stop is orderly; EOF in the
    // middle of a header is the client's fault, worth a log line.
    if (ch_.clean_eof() || ch_.stopped()) finish(Status::ok());
    else finish(st);
    return Got::Done;
  }
  auto r = decode_request(hdr);
  if (!r) {
    finish(r.status());
    return Got::Done;
  }
  Request& req = job.req;
  req = *r;
  if (req.type == kCmdDisc) {
    log::info("client sent DISC");
    finish(Status::ok());
    return Got::Done;
  }
  Verdict& v = job.verdict;
  v = check_request(req, limits_);
  if (log::verbosity() >= 2)
    log::debug(std::string(command_name(req.type)) + " offset " + std::to_string(req.offset) + " length " +
               std::to_string(req.length) + " flags " + std::to_string(req.flags) +
               (v.error ? " -> error " + std::to_string(v.error) : ""));
  if (!has_payload(req)) {
    ch_.limit_read_ahead(0);
    return Got::Request;
  }
  Store::DirectRange direct;
  const bool have_direct = v.error == 0 && store_.direct_range(req.offset, req.length, Store::Access::kWrite, direct);
  if (have_direct && direct.memory) {
    // Memory stores take the payload where it belongs: no staging copy.
    // A client that vanishes mid-payload leaves the range half-written,
    // which the Store contract allows for a failed write.
    st = ch_.read_exact(std::span(direct.memory, req.length));
    job.in_place = true;
  } else if (have_direct && direct.fd >= 0) {
    // File stores take it straight from the socket: into their shared
    // mapping (the page cache) when they have one, else by splice.
    Status file_error;
    st = ch_.read_to_file(direct.fd, direct.file_offset, req.length, file_error, direct.write_memory);
    job.in_place = true;
    if (!file_error) v = Verdict{nbd_error(file_error), file_error.message()};
  } else if (v.error == 0) {
    st = ch_.read_exact(job.buf.get(req.length));
  } else {
    st = ch_.skip(req.length);  // keep the stream in sync; nothing allocated
  }
  if (!st) {
    finish(Status::error(EPROTO, "client disconnected in the middle of a WRITE payload"));
    return Got::Done;
  }
  // A client writing in large requests likely sends more of them: read just
  // the next header, so its payload goes straight to the store (one copy)
  // instead of through the buffer. Small writes keep the full read-ahead,
  // which batches them.
  ch_.limit_read_ahead(job.in_place && req.length >= kLargeWrite ? kRequestHeaderSize : 0);
  return Got::Request;
}

void Transmission::worker() {
  std::array<Job, kMaxBatch> jobs;
  ReplyBatch out;
  for (;;) {
    size_t n = next_batch(jobs);
    if (n == 0) return;
    Status st;
    for (size_t i = 0; i < n && st; ++i) st = execute(jobs[i], out);
    if (st) st = out.flush(ch_);
    if (!st) {
      // A reply could not be sent: the connection is broken. Stop reading;
      // the other workers finish what they hold.
      log::info("cannot send reply: " + st.message());
      ch_.stop();
      ch_.shutdown_write();
      return;
    }
    for (size_t i = 0; i < n; ++i) jobs[i].buf.trim();
  }
}

std::span<const std::byte> Transmission::data_header(const Request& req, std::byte (&h)[kDataHeaderMax]) const {
  if (!s_.structured_replies) {
    store_be32(h, kSimpleReplyMagic);
    store_be32(h + 4, 0);
    store_be64(h + 8, req.cookie);
    return {h, kSimpleReplySize};
  }
  store_be32(h, kStructuredReplyMagic);
  store_be16(h + 4, kReplyFlagDone);
  store_be16(h + 6, kReplyTypeOffsetData);
  store_be64(h + 8, req.cookie);
  store_be32(h + 16, 8 + req.length);
  store_be64(h + 20, req.offset);
  return {h, 28};
}

void Transmission::add_simple(ReplyBatch& out, uint64_t cookie, uint32_t error, std::span<const std::byte> data) {
  std::byte h[kSimpleReplySize];
  store_be32(h, kSimpleReplyMagic);
  store_be32(h + 4, error);
  store_be64(h + 8, cookie);
  out.add(h, data);
}

void Transmission::add_error(ReplyBatch& out, const Request& req, uint32_t error, const std::string& msg) {
  // The backend failing (I/O, space, memory) is the operator's business: the
  // NBD client only gets an errno, so the reason goes to the log. A client's
  // own mistake (a bad range, an unsupported flag) is logged with -v only.
  if (error == kEio || error == kEnospc || error == kEnomem)
    log::warn(std::string(command_name(req.type)) + " at " + std::to_string(req.offset) + " failed: " + msg);
  else
    log::info(std::string(command_name(req.type)) + " failed: " + msg);
  if (!s_.structured_replies) {
    // A simple READ error carries no payload: the client knows none follows.
    add_simple(out, req.cookie, error);
    return;
  }
  std::string m = msg.substr(0, std::min<size_t>(msg.size(), kMaxStringLength));
  ByteWriter w;
  w.u32(kStructuredReplyMagic).u16(kReplyFlagDone).u16(kReplyTypeError).u64(req.cookie);
  w.u32(static_cast<uint32_t>(6 + m.size())).u32(error).u16(static_cast<uint16_t>(m.size())).str(m);
  out.add(w.data());
}

void Transmission::add_read(ReplyBatch& out, const Request& req, std::span<const std::byte> data,
                            const std::vector<Extent>& map) {
  if (map.empty()) {  // the common case: one reply carrying all the data
    std::byte h[kDataHeaderMax];
    out.add(data_header(req, h), data);
    return;
  }
  // One chunk per data run, one per hole run; DONE on the last. Everything
  // was read before the first byte goes out, so no error can follow.
  struct Piece { uint64_t at; uint64_t len; bool hole; };
  std::vector<Piece> pieces;
  uint64_t at = 0;
  for (auto& e : map) {
    if (e.length == 0) continue;
    if (!pieces.empty() && pieces.back().hole == e.zero) pieces.back().len += e.length;
    else pieces.push_back({at, e.length, e.zero});
    at += e.length;
  }
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece& p = pieces[i];
    std::byte h[32];
    store_be32(h, kStructuredReplyMagic);
    store_be16(h + 4, i + 1 == pieces.size() ? kReplyFlagDone : 0);
    store_be16(h + 6, p.hole ? kReplyTypeOffsetHole : kReplyTypeOffsetData);
    store_be64(h + 8, req.cookie);
    store_be32(h + 16, p.hole ? 12 : static_cast<uint32_t>(8 + p.len));
    store_be64(h + 20, req.offset + p.at);
    if (p.hole) {
      store_be32(h + 28, static_cast<uint32_t>(p.len));
      out.add(std::span<const std::byte>(h, 32));
    } else {
      out.add(std::span<const std::byte>(h, 28), data.subspan(p.at, p.len));
    }
  }
}

Status Transmission::do_read(Job& job, ReplyBatch& out) {
  const Request& req = job.req;
  std::vector<Extent> map;
  const bool look_for_holes = s_.structured_replies && !(req.flags & kCmdFlagDf) &&
                              req.length >= kHoleScanThreshold && store_.can_extents() && store_.cheap_extents();
  if (look_for_holes) {
    uint64_t covered = 0;
    while (covered < req.length) {
      size_t before = map.size();
      if (!store_.extents(req.offset + covered, req.length - covered, map) || map.size() == before) {
        map.clear();  // no usable map: send it all as data
        break;
      }
      const uint64_t was = covered;
      for (size_t i = before; i < map.size(); ++i) {
        map[i].length = std::min<uint64_t>(map[i].length, req.length - covered);
        covered += map[i].length;
      }
      if (covered == was) {  // a store that makes no progress: give up the map
        map.clear();
        break;
      }
    }
    bool any_hole = false;
    for (auto& e : map) any_hole = any_hole || e.zero;
    if (!any_hole) map.clear();
  }
  Store::DirectRange direct;
  if (map.empty() && store_.direct_range(req.offset, req.length, Store::Access::kRead, direct) &&
      (direct.memory || req.length >= kSendfileThreshold)) {
    if (direct.memory) {  // zero-copy: the store's memory goes out in the batch's writev
      add_read(out, req, std::span<const std::byte>(direct.memory, req.length), map);
      return Status::ok();
    }
    // File data goes by sendfile, after the replies batched so far.
    std::byte h[kDataHeaderMax];
    MEMSYNC_TRY(out.flush(ch_));
    return ch_.write_file(data_header(req, h), direct.fd, direct.file_offset, req.length);
  }
  std::span<std::byte> data = job.buf.get(req.length);
  if (map.empty()) {
    Status st = store_.read_at(data, req.offset);
    if (!st) {
      add_error(out, req, nbd_error(st), st.message());
      return Status::ok();
    }
  } else {
    uint64_t at = 0;
    for (auto& e : map) {
      if (!e.zero) {
        Status st = store_.read_at(data.subspan(at, e.length), req.offset + at);
        if (!st) {
          add_error(out, req, nbd_error(st), st.message());
          return Status::ok();
        }
      }
      at += e.length;
    }
  }
  add_read(out, req, data, map);
  return Status::ok();
}

void Transmission::do_block_status(const Request& req, ReplyBatch& out) {
  std::vector<Extent> ext;
  Status st = store_.extents(req.offset, req.length, ext);
  if (!st || ext.empty()) {
    ext.clear();
    ext.push_back({req.length, false, false});  // the spec allows "status 0" for all
  }
  struct Descriptor { uint64_t length; uint32_t flags; };
  std::vector<Descriptor> desc;
  uint64_t total = 0;
  for (auto& e : ext) {
    uint64_t len = std::min<uint64_t>(e.length, req.length - total);
    if (len == 0) break;
    uint32_t flags = (e.hole ? kStateHole : 0) | (e.zero ? kStateZero : 0);
    if (!desc.empty() && desc.back().flags == flags) desc.back().length += len;
    else desc.push_back({len, flags});
    total += len;
    if (total >= req.length) break;
  }
  if (req.flags & kCmdFlagReqOne) desc.resize(1);
  ByteWriter w;
  w.u32(kStructuredReplyMagic).u16(kReplyFlagDone).u16(kReplyTypeBlockStatus).u64(req.cookie);
  w.u32(static_cast<uint32_t>(4 + 8 * desc.size())).u32(kBaseAllocationId);
  for (auto& d : desc) w.u32(static_cast<uint32_t>(d.length)).u32(d.flags);
  out.add(w.data());
}

Status Transmission::execute(Job& job, ReplyBatch& out) {
  const Request& req = job.req;
  if (job.verdict.error != 0) {
    add_error(out, req, job.verdict.error, job.verdict.message);
    return Status::ok();
  }
  Status st;
  const bool fua = req.flags & kCmdFlagFua;
  switch (req.type) {
    case kCmdRead:
      return do_read(job, out);
    case kCmdBlockStatus:
      do_block_status(req, out);
      return Status::ok();
    case kCmdWrite:
      if (!job.in_place) st = store_.write_at(std::span<const std::byte>(job.buf.get(req.length)), req.offset);
      if (st && fua) st = store_.sync_range(req.offset, req.length);
      break;
    case kCmdFlush:
      st = store_.sync();
      break;
    case kCmdTrim:
      st = store_.trim(req.offset, req.length);
      if (st && fua) st = store_.sync_range(req.offset, req.length);
      break;
    case kCmdWriteZeroes:
      if ((req.flags & kCmdFlagFastZero) && !store_.can_fast_zero()) {
        st = Status::unsupported("fast zero is not supported");
        break;
      }
      st = store_.write_zeroes(req.offset, req.length, !(req.flags & kCmdFlagNoHole));
      if (st && fua) st = store_.sync_range(req.offset, req.length);
      break;
    case kCmdCache:
      st = store_.prefetch(req.offset, req.length);
      break;
  }
  if (st) add_simple(out, req.cookie, 0);
  else add_error(out, req, nbd_error(st), st.message());
  return Status::ok();
}

}  // namespace

Status run_transmission(Channel& ch, Store& store, const ExportConfig& cfg, const Session& session,
                        const TransmissionOptions& opts) {
  Transmission t(ch, store, cfg, session);
  return t.run(opts.threads);
}

}  // namespace memsync::nbd
