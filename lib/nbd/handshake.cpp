#include "nbd/handshake.hpp"

#include <vector>

#include "nbd/protocol.hpp"
#include "net/tls.hpp"
#include "util/endian.hpp"
#include "util/log.hpp"

namespace memsync::nbd {
namespace {

class Negotiation {
 public:
  Negotiation(Channel& ch, const ExportConfig& cfg, const Store& store) : ch_(ch), cfg_(cfg), store_(store) {}

  Result<Session> run();

 private:
  Status reply(uint32_t option, uint32_t type, std::span<const std::byte> data = {}) {
    ByteWriter w;
    w.u64(kOptReplyMagic).u32(option).u32(type).u32(static_cast<uint32_t>(data.size()));
    return ch_.write({w.data(), data});
  }
  Status error_reply(uint32_t option, uint32_t type, const std::string& msg) {
    log::info("option " + std::to_string(option) + " refused: " + msg);
    ByteWriter w;
    w.str(msg.substr(0, kMaxStringLength));
    return reply(option, type, w.data());
  }
  bool name_matches(const std::string& name) const { return name.empty() || name == cfg_.name; }
  Status send_export_info(uint32_t option);
  Status handle_info(uint32_t option, std::span<const std::byte> data, bool& enter);
  Status handle_meta_context(uint32_t option, std::span<const std::byte> data);
  Status handle_starttls(uint32_t option, uint32_t length);

  Channel& ch_;
  const ExportConfig& cfg_;
  const Store& store_;
  Session s_;
  bool no_zeroes_ = false;
};

Result<Session> Negotiation::run() {
  ByteWriter greet;
  greet.u64(kNbdMagic).u64(kIHaveOpt).u16(kFlagFixedNewstyle | kFlagNoZeroes);
  MEMSYNC_TRY(ch_.write({greet.data()}));
  std::byte cf[4];
  MEMSYNC_TRY(ch_.read_exact(cf));
  uint32_t client_flags = load_be32(cf);
  if (client_flags & ~(kClientFixedNewstyle | kClientNoZeroes))
    return Status::error(EPROTO, "client sent unknown flags " + std::to_string(client_flags));
  no_zeroes_ = client_flags & kClientNoZeroes;
  const bool fixed = client_flags & kClientFixedNewstyle;

  for (;;) {
    std::byte hdr[16];
    MEMSYNC_TRY(ch_.read_exact(hdr));
    if (load_be64(hdr) != kIHaveOpt) return Status::error(EPROTO, "bad option magic");
    uint32_t option = load_be32(hdr + 8), length = load_be32(hdr + 12);
    log::debug("option " + std::to_string(option) + " with " + std::to_string(length) + " bytes");

    if (option == kOptStartTls) {
      MEMSYNC_TRY(handle_starttls(option, length));
      continue;
    }
    if (length > kMaxOptionLength) {
      MEMSYNC_TRY(ch_.skip(length));
      if (option == kOptExportName) return Status::error(EPROTO, "export name too long");
      MEMSYNC_TRY(error_reply(option, kRepErrTooBig, "option data over " + std::to_string(kMaxOptionLength) + " bytes"));
      continue;
    }
    std::vector<std::byte> data(length);
    MEMSYNC_TRY(ch_.read_exact(data));

    const bool tls_missing = cfg_.tls == TlsMode::Require && !s_.tls;
    if (option == kOptExportName) {
      std::string name(reinterpret_cast<const char*>(data.data()), data.size());
      if (tls_missing) return Status::error(EACCES, "client entered transmission without TLS");
      if (!name_matches(name)) return Status::error(ENOENT, "client asked for unknown export '" + name + "'");
      ByteWriter w;
      s_.transmission_flags = transmission_flags(cfg_, store_, false);
      w.u64(store_.size()).u16(s_.transmission_flags);
      if (!no_zeroes_) w.zeros(124);
      MEMSYNC_TRY(ch_.write({w.data()}));
      s_.structured_replies = false;  // EXPORT_NAME clients get simple replies
      s_.base_allocation = false;
      return s_;
    }
    if (!fixed) return Status::error(EPROTO, "non-fixed newstyle client sent option " + std::to_string(option));
    if (option == kOptAbort) {
      (void)reply(option, kRepAck);  // the client may already be gone
      return Status::closed("client aborted the handshake");
    }
    if (tls_missing) {
      MEMSYNC_TRY(error_reply(option, kRepErrTlsReqd, "this server requires TLS: use STARTTLS first"));
      continue;
    }
    switch (option) {
      case kOptList: {
        if (length != 0) { MEMSYNC_TRY(error_reply(option, kRepErrInvalid, "LIST takes no data")); break; }
        ByteWriter w;
        w.u32(static_cast<uint32_t>(cfg_.name.size())).str(cfg_.name).str(cfg_.description);
        MEMSYNC_TRY(reply(option, kRepServer, w.data()));
        MEMSYNC_TRY(reply(option, kRepAck));
        break;
      }
      case kOptInfo:
      case kOptGo: {
        bool enter = false;
        MEMSYNC_TRY(handle_info(option, data, enter));
        if (enter) return s_;
        break;
      }
      case kOptStructuredReply:
        if (length != 0) { MEMSYNC_TRY(error_reply(option, kRepErrInvalid, "STRUCTURED_REPLY takes no data")); break; }
        s_.structured_replies = true;
        MEMSYNC_TRY(reply(option, kRepAck));
        break;
      case kOptListMetaContext:
      case kOptSetMetaContext:
        MEMSYNC_TRY(handle_meta_context(option, data));
        break;
      default:
        MEMSYNC_TRY(error_reply(option, kRepErrUnsup, "option " + std::to_string(option) + " is not supported"));
    }
  }
}

Status Negotiation::handle_starttls(uint32_t option, uint32_t length) {
  MEMSYNC_TRY(ch_.skip(length));
  if (length != 0) return error_reply(option, kRepErrInvalid, "STARTTLS takes no data");
  if (cfg_.tls == TlsMode::Off || !cfg_.tls_context) return error_reply(option, kRepErrPolicy, "TLS is not enabled on this server");
  if (s_.tls) return error_reply(option, kRepErrInvalid, "TLS is already active");
  if (ch_.buffered() != 0) return Status::error(EPROTO, "client sent data after STARTTLS before the reply");
  MEMSYNC_TRY(reply(option, kRepAck));
  auto [in, out] = ch_.release_fds();
  auto accepted = cfg_.tls_context->accept(std::move(in), std::move(out));
  if (!accepted) return accepted.status();
  ch_.upgrade(std::move(accepted->plain), std::move(accepted->relay));
  s_.tls = true;
  // Anything negotiated before TLS could have been tampered with: forget it.
  s_.structured_replies = false;
  s_.base_allocation = false;
  log::info("TLS established");
  return Status::ok();
}

Status Negotiation::send_export_info(uint32_t option) {
  ByteWriter w;
  s_.transmission_flags = transmission_flags(cfg_, store_, s_.structured_replies);
  w.u16(kInfoExport).u64(store_.size()).u16(s_.transmission_flags);
  return reply(option, kRepInfo, w.data());
}

Status Negotiation::handle_info(uint32_t option, std::span<const std::byte> data, bool& enter) {
  ByteReader r(data);
  uint32_t name_len = r.u32();
  if (!r.ok() || name_len > kMaxStringLength || name_len > r.remaining())
    return error_reply(option, kRepErrInvalid, "malformed INFO/GO request: bad name length");
  std::string name = r.str(name_len);
  uint16_t nreq = r.u16();
  if (!r.ok() || r.remaining() != 2u * nreq)
    return error_reply(option, kRepErrInvalid, "malformed INFO/GO request: bad information request count");
  std::vector<uint16_t> wanted(nreq);
  for (auto& x : wanted) x = r.u16();
  if (!name_matches(name)) return error_reply(option, kRepErrUnknown, "no export named '" + name + "'");

  MEMSYNC_TRY(send_export_info(option));
  bool sent_name = false, sent_desc = false;
  for (uint16_t t : wanted) {
    if (t == kInfoName && !sent_name) {
      ByteWriter w;
      w.u16(kInfoName).str(cfg_.name);
      MEMSYNC_TRY(reply(option, kRepInfo, w.data()));
      sent_name = true;
    } else if (t == kInfoDescription && !sent_desc && !cfg_.description.empty()) {
      ByteWriter w;
      w.u16(kInfoDescription).str(cfg_.description);
      MEMSYNC_TRY(reply(option, kRepInfo, w.data()));
      sent_desc = true;
    }
  }
  // Block size constraints are always sent: clients that did not ask may
  // ignore them, and clients that honour them avoid EINVAL surprises.
  ByteWriter bs;
  uint32_t preferred = std::max(cfg_.preferred_block, std::max(cfg_.min_block, store_.block_size()));
  bs.u16(kInfoBlockSize).u32(cfg_.min_block).u32(preferred).u32(cfg_.max_payload);
  MEMSYNC_TRY(reply(option, kRepInfo, bs.data()));
  MEMSYNC_TRY(reply(option, kRepAck));
  enter = option == kOptGo;
  return Status::ok();
}

Status Negotiation::handle_meta_context(uint32_t option, std::span<const std::byte> data) {
  const bool set = option == kOptSetMetaContext;
  if (!s_.structured_replies)
    return error_reply(option, kRepErrInvalid, "metadata contexts need structured replies first");
  ByteReader r(data);
  uint32_t name_len = r.u32();
  if (!r.ok() || name_len > kMaxStringLength || name_len > r.remaining())
    return error_reply(option, kRepErrInvalid, "malformed meta context request: bad export name length");
  std::string name = r.str(name_len);
  uint32_t nqueries = r.u32();
  std::vector<std::string> queries;
  for (uint32_t i = 0; r.ok() && i < nqueries; ++i) {
    uint32_t qlen = r.u32();
    if (!r.ok() || qlen > kMaxStringLength || qlen > r.remaining())
      return error_reply(option, kRepErrInvalid, "malformed meta context request: bad query length");
    queries.push_back(r.str(qlen));
  }
  if (!r.ok() || r.remaining() != 0)
    return error_reply(option, kRepErrInvalid, "malformed meta context request: length mismatch");
  if (!name_matches(name)) return error_reply(option, kRepErrUnknown, "no export named '" + name + "'");

  bool selected = false;
  if (!set && queries.empty()) selected = true;  // LIST with no query: everything
  for (auto& q : queries) {
    if (q == kBaseAllocation || (!set && q == "base:")) selected = true;
  }
  if (set) s_.base_allocation = selected;
  if (selected) {
    ByteWriter w;
    w.u32(set ? kBaseAllocationId : 0).str(kBaseAllocation);
    MEMSYNC_TRY(reply(option, kRepMetaContext, w.data()));
  }
  return reply(option, kRepAck);
}

}  // namespace

uint16_t transmission_flags(const ExportConfig& cfg, const Store& store, bool structured) {
  uint16_t f = kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagSendCache;
  if (cfg.read_only || store.is_read_only()) {
    f |= kFlagReadOnly;
  } else {
    f |= kFlagSendWriteZeroes;
    if (store.can_trim()) f |= kFlagSendTrim;
    if (store.can_fast_zero()) f |= kFlagSendFastZero;
  }
  if (store.can_multi_conn()) f |= kFlagCanMultiConn;
  if (structured) f |= kFlagSendDf;
  return f;
}

Result<Session> server_handshake(Channel& ch, const ExportConfig& cfg, const Store& store) {
  Negotiation n(ch, cfg, store);
  return n.run();
}

}  // namespace memsync::nbd
