#include "nbd/transmission.hpp"

#include <algorithm>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "nbd/protocol.hpp"
#include "nbd/request.hpp"
#include "util/endian.hpp"
#include "util/log.hpp"

namespace memsync::nbd {
namespace {

// Reads of at least this size look for holes first, so sparse regions go
// out as NBD_REPLY_TYPE_OFFSET_HOLE; smaller reads are not worth the calls.
constexpr uint32_t kHoleScanThreshold = 64 * 1024;
// A worker keeps a buffer this large between requests; bigger ones are freed.
constexpr size_t kKeepBuffer = 4 << 20;

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
      if (capacity > kKeepBuffer) { data.reset(); capacity = 0; }
    }
  };

  // Under the read lock: reads the next request (and its payload into buf).
  // Returns false when this connection is done reading.
  // in_place: a WRITE payload went straight into the store's memory.
  bool next(Request& req, Verdict& v, Buffer& buf, bool& in_place);
  void execute(const Request& req, const Verdict& v, Buffer& buf, bool in_place);
  void worker();
  void finish(Status st) {  // REQUIRES: read lock held
    done_ = true;
    if (!st.is_ok() && fatal_.is_ok()) fatal_ = st;
  }

  Status send_simple(uint64_t cookie, uint32_t error, std::span<const std::byte> data = {});
  Status send_error(const Request& req, uint32_t error, const std::string& msg);
  Status send_read(const Request& req, std::span<std::byte> data, const std::vector<Extent>& holes_map);
  Status do_read(const Request& req, Buffer& buf);
  Status do_block_status(const Request& req);

  Channel& ch_;
  Store& store_;
  const Session& s_;
  RequestLimits limits_;
  std::mutex read_mu_;
  bool done_ = false;  // guarded by read_mu_
  Status fatal_;       // guarded by read_mu_
};

bool Transmission::next(Request& req, Verdict& v, Buffer& buf, bool& in_place) {
  in_place = false;
  std::lock_guard lock(read_mu_);
  if (done_) return false;
  std::byte hdr[kRequestHeaderSize];
  Status st = ch_.read_exact(hdr);
  if (!st) {
    // A clean EOF between requests or a server stop is orderly; EOF in the
    // middle of a header is the client's fault, worth a log line.
    if (ch_.clean_eof() || ch_.stopped()) finish(Status::ok());
    else finish(st);
    return false;
  }
  auto r = decode_request(hdr);
  if (!r) {
    finish(r.status());
    return false;
  }
  req = *r;
  if (req.type == kCmdDisc) {
    log::info("client sent DISC");
    finish(Status::ok());
    return false;
  }
  v = check_request(req, limits_);
  if (log::verbosity() >= 2)
    log::debug(std::string(command_name(req.type)) + " offset " + std::to_string(req.offset) + " length " +
               std::to_string(req.length) + " flags " + std::to_string(req.flags) +
               (v.error ? " -> error " + std::to_string(v.error) : ""));
  if (has_payload(req)) {
    Store::DirectRange direct;
    if (v.error == 0 && store_.direct_range(req.offset, req.length, direct) && direct.memory) {
      // Memory stores take the payload where it belongs: no staging copy.
      // A client that vanishes mid-payload leaves the range half-written,
      // which the Store contract allows for a failed write.
      st = ch_.read_exact(std::span(direct.memory, req.length));
      in_place = true;
    } else if (v.error == 0 && direct.fd >= 0) {
      // File stores take it by splice, straight from the socket.
      Status file_error;
      st = ch_.read_to_file(direct.fd, direct.file_offset, req.length, file_error);
      in_place = true;
      if (!file_error) v = Verdict{nbd_error(file_error), file_error.message()};
    } else if (v.error == 0) {
      st = ch_.read_exact(buf.get(req.length));
    } else {
      st = ch_.skip(req.length);  // keep the stream in sync; nothing allocated
    }
    if (!st) {
      finish(Status::error(EPROTO, "client disconnected in the middle of a WRITE payload"));
      return false;
    }
  }
  return true;
}

void Transmission::worker() {
  Buffer buf;
  Request req;
  Verdict v;
  bool in_place = false;
  while (next(req, v, buf, in_place)) {
    execute(req, v, buf, in_place);
    buf.trim();
  }
}

Status Transmission::send_simple(uint64_t cookie, uint32_t error, std::span<const std::byte> data) {
  std::byte h[kSimpleReplySize];
  store_be32(h, kSimpleReplyMagic);
  store_be32(h + 4, error);
  store_be64(h + 8, cookie);
  return ch_.write({std::span<const std::byte>(h), data});
}

Status Transmission::send_error(const Request& req, uint32_t error, const std::string& msg) {
  log::info(std::string(command_name(req.type)) + " failed: " + msg);
  if (!s_.structured_replies) {
    // A simple READ error carries no payload: the client knows none follows.
    return send_simple(req.cookie, error);
  }
  std::string m = msg.substr(0, std::min<size_t>(msg.size(), kMaxStringLength));
  ByteWriter w;
  w.u32(kStructuredReplyMagic).u16(kReplyFlagDone).u16(kReplyTypeError).u64(req.cookie);
  w.u32(static_cast<uint32_t>(6 + m.size())).u32(error).u16(static_cast<uint16_t>(m.size())).str(m);
  return ch_.write({w.data()});
}

Status Transmission::send_read(const Request& req, std::span<std::byte> data, const std::vector<Extent>& map) {
  if (!s_.structured_replies) return send_simple(req.cookie, 0, data);
  // One chunk per data run, one per hole run; DONE on the last. Everything
  // was read before the first byte goes out, so no error can follow.
  std::vector<std::byte> headers;
  std::vector<std::span<const std::byte>> parts;
  struct Piece { uint64_t at; uint64_t len; bool hole; };
  std::vector<Piece> pieces;
  if (map.empty()) {
    pieces.push_back({0, data.size(), false});
  } else {
    uint64_t at = 0;
    for (auto& e : map) {
      if (e.length == 0) continue;
      bool hole = e.zero;
      if (!pieces.empty() && pieces.back().hole == hole) pieces.back().len += e.length;
      else pieces.push_back({at, e.length, hole});
      at += e.length;
    }
  }
  headers.resize(pieces.size() * 32);
  for (size_t i = 0; i < pieces.size(); ++i) {
    std::byte* h = headers.data() + i * 32;
    const Piece& p = pieces[i];
    const bool last = i + 1 == pieces.size();
    store_be32(h, kStructuredReplyMagic);
    store_be16(h + 4, last ? kReplyFlagDone : 0);
    store_be16(h + 6, p.hole ? kReplyTypeOffsetHole : kReplyTypeOffsetData);
    store_be64(h + 8, req.cookie);
    store_be32(h + 16, p.hole ? 12 : static_cast<uint32_t>(8 + p.len));
    store_be64(h + 20, req.offset + p.at);
    if (p.hole) {
      store_be32(h + 28, static_cast<uint32_t>(p.len));
      parts.emplace_back(h, 32);
    } else {
      parts.emplace_back(h, 28);
      parts.emplace_back(data.data() + p.at, p.len);
    }
    if (parts.size() >= 62 && !last) {  // keep within one writev's parts
      MEMSYNC_TRY(ch_.write(std::span<const std::span<const std::byte>>(parts)));
      parts.clear();
    }
  }
  return ch_.write(std::span<const std::span<const std::byte>>(parts));
}

Status Transmission::do_read(const Request& req, Buffer& buf) {
  std::vector<Extent> map;
  const bool look_for_holes = s_.structured_replies && !(req.flags & kCmdFlagDf) &&
                              req.length >= kHoleScanThreshold && store_.can_extents() &&
                              store_.cheap_extents();
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
  if (map.empty() && store_.direct_range(req.offset, req.length, direct)) {
    // Zero-copy: memory goes out with one writev, file data with sendfile.
    std::byte h[32];
    size_t hlen;
    if (s_.structured_replies) {
      store_be32(h, kStructuredReplyMagic);
      store_be16(h + 4, kReplyFlagDone);
      store_be16(h + 6, kReplyTypeOffsetData);
      store_be64(h + 8, req.cookie);
      store_be32(h + 16, 8 + req.length);
      store_be64(h + 20, req.offset);
      hlen = 28;
    } else {
      store_be32(h, kSimpleReplyMagic);
      store_be32(h + 4, 0);
      store_be64(h + 8, req.cookie);
      hlen = kSimpleReplySize;
    }
    if (direct.memory)
      return ch_.write({std::span<const std::byte>(h, hlen), std::span<const std::byte>(direct.memory, req.length)});
    return ch_.write_file(std::span<const std::byte>(h, hlen), direct.fd, direct.file_offset, req.length);
  }
  std::span<std::byte> data = buf.get(req.length);
  if (map.empty()) {
    Status st = store_.read_at(data, req.offset);
    if (!st) return send_error(req, nbd_error(st), st.message());
  } else {
    uint64_t at = 0;
    for (auto& e : map) {
      if (!e.zero) {
        Status st = store_.read_at(data.subspan(at, e.length), req.offset + at);
        if (!st) return send_error(req, nbd_error(st), st.message());
      }
      at += e.length;
    }
  }
  return send_read(req, data, map);
}

Status Transmission::do_block_status(const Request& req) {
  std::vector<Extent> ext;
  Status st = store_.extents(req.offset, req.length, ext);
  if (!st || ext.empty()) {
    ext.clear();
    ext.push_back({req.length, false, false});  // the spec allows "status 0" for all
  }
  struct Descriptor { uint64_t length; uint32_t flags; };
  std::vector<Descriptor> out;
  uint64_t total = 0;
  for (auto& e : ext) {
    uint64_t len = std::min<uint64_t>(e.length, req.length - total);
    if (len == 0) break;
    uint32_t flags = (e.hole ? kStateHole : 0) | (e.zero ? kStateZero : 0);
    if (!out.empty() && out.back().flags == flags) out.back().length += len;
    else out.push_back({len, flags});
    total += len;
    if (total >= req.length) break;
  }
  if (req.flags & kCmdFlagReqOne) out.resize(1);
  ByteWriter w;
  w.u32(kStructuredReplyMagic).u16(kReplyFlagDone).u16(kReplyTypeBlockStatus).u64(req.cookie);
  w.u32(static_cast<uint32_t>(4 + 8 * out.size())).u32(kBaseAllocationId);
  for (auto& d : out) w.u32(static_cast<uint32_t>(d.length)).u32(d.flags);
  return ch_.write({w.data()});
}

void Transmission::execute(const Request& req, const Verdict& v, Buffer& buf, bool in_place) {
  Status out;
  if (v.error != 0) {
    out = send_error(req, v.error, v.message);
  } else {
    Status st;
    const bool fua = req.flags & kCmdFlagFua;
    switch (req.type) {
      case kCmdRead:
        out = do_read(req, buf);
        break;
      case kCmdBlockStatus:
        out = do_block_status(req);
        break;
      case kCmdWrite:
        if (!in_place) st = store_.write_at(std::span<const std::byte>(buf.get(req.length)), req.offset);
        if (st && fua) st = store_.sync();
        break;
      case kCmdFlush:
        st = store_.sync();
        break;
      case kCmdTrim:
        st = store_.trim(req.offset, req.length);
        if (st && fua) st = store_.sync();
        break;
      case kCmdWriteZeroes:
        if ((req.flags & kCmdFlagFastZero) && !store_.can_fast_zero()) {
          st = Status::unsupported("fast zero is not supported");
          break;
        }
        st = store_.write_zeroes(req.offset, req.length, !(req.flags & kCmdFlagNoHole));
        if (st && fua) st = store_.sync();
        break;
      case kCmdCache:
        st = store_.prefetch(req.offset, req.length);
        break;
    }
    if (req.type != kCmdRead && req.type != kCmdBlockStatus) {
      if (st) out = send_simple(req.cookie, 0);
      else out = send_error(req, nbd_error(st), st.message());
    }
  }
  if (!out) {
    // The reply could not be sent: the connection is broken. Stop reading;
    // the other workers finish what they hold.
    log::info("cannot send reply: " + out.message());
    ch_.stop();
    ch_.shutdown_write();
  }
}

}  // namespace

Status run_transmission(Channel& ch, Store& store, const ExportConfig& cfg, const Session& session,
                        const TransmissionOptions& opts) {
  Transmission t(ch, store, cfg, session);
  return t.run(opts.threads);
}

}  // namespace memsync::nbd
