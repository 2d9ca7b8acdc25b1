#include "nbd/client_handshake.hpp"

#include <vector>

#include "nbd/protocol.hpp"
#include "util/endian.hpp"

namespace memsync::nbd {
namespace {

// Largest option reply we accept: names and messages are at most 4096 bytes
// by the spec; INFO replies are smaller still.
constexpr uint32_t kMaxReplyLength = 64 * 1024;

Status send_option(Channel& ch, uint32_t option, std::span<const std::byte> data) {
  ByteWriter w;
  w.u64(kIHaveOpt).u32(option).u32(static_cast<uint32_t>(data.size()));
  return ch.write({w.data(), data});
}

struct OptionReply {
  uint32_t option = 0, type = 0;
  std::vector<std::byte> data;
};

Result<OptionReply> read_reply(Channel& ch, uint32_t expected_option) {
  std::byte h[20];
  MEMSYNC_TRY(ch.read_exact(h));
  if (load_be64(h) != kOptReplyMagic) return Status::error(EPROTO, "server sent a bad option reply magic");
  OptionReply r;
  r.option = load_be32(h + 8);
  r.type = load_be32(h + 12);
  uint32_t len = load_be32(h + 16);
  if (r.option != expected_option) return Status::error(EPROTO, "server answered another option");
  if (len > kMaxReplyLength) return Status::error(EPROTO, "server sent an option reply of " + std::to_string(len) + " bytes");
  r.data.resize(len);
  MEMSYNC_TRY(ch.read_exact(r.data));
  return r;
}

Status refused(const OptionReply& r, const std::string& export_name) {
  std::string msg(reinterpret_cast<const char*>(r.data.data()), r.data.size());
  std::string what = "server refused export '" + export_name + "'" + (msg.empty() ? "" : ": " + msg);
  switch (r.type) {
    case kRepErrUnknown: return Status::error(ENOENT, what);
    case kRepErrPolicy: return Status::error(EACCES, what);
    case kRepErrTlsReqd:
      return Status::error(EACCES, what + (msg.find("TLS") != std::string::npos ? "" : " (the server requires TLS)"));
    case kRepErrBlockSizeReqd: return Status::error(EINVAL, what + " (the server requires block size negotiation)");
    case kRepErrShutdown: return Status::error(ESHUTDOWN, what + " (the server is shutting down)");
    default: return Status::error(EINVAL, what);
  }
}

}  // namespace

Result<ExportInfo> client_handshake(Channel& ch, const std::string& export_name, const TlsClientContext* tls) {
  if (export_name.size() > kMaxStringLength) return Status::invalid("export name longer than 4096 bytes");
  std::byte greet[18];
  MEMSYNC_TRY(ch.read_exact(greet));
  if (load_be64(greet) != kNbdMagic) return Status::error(EPROTO, "not an NBD server (bad magic)");
  if (load_be64(greet + 8) != kIHaveOpt)
    return Status::error(EPROTO, "the server speaks oldstyle NBD, which is not supported");
  uint16_t hflags = load_be16(greet + 16);
  if (!(hflags & kFlagFixedNewstyle)) return Status::error(EPROTO, "the server does not speak fixed newstyle NBD");
  const bool no_zeroes = hflags & kFlagNoZeroes;
  ByteWriter cf;
  cf.u32(kClientFixedNewstyle | (no_zeroes ? kClientNoZeroes : 0));
  MEMSYNC_TRY(ch.write({cf.data()}));

  if (tls) {
    MEMSYNC_TRY(send_option(ch, kOptStartTls, {}));
    auto r = read_reply(ch, kOptStartTls);
    if (!r) return r.status();
    if (r->type != kRepAck) {
      std::string msg(reinterpret_cast<const char*>(r->data.data()), r->data.size());
      return Status::error(EACCES, "the server refused TLS" + (msg.empty() ? "" : ": " + msg));
    }
    if (ch.buffered() != 0) return Status::error(EPROTO, "the server sent data after accepting STARTTLS");
    auto [in, out] = ch.release_fds();
    if (out.valid()) return Status::invalid("TLS needs one socket, not a pair of descriptors");
    auto session = tls->connect(std::move(in));
    if (!session) return session.status();
    ch.upgrade(std::move(session->plain), std::move(session->relay));
  }

  ExportInfo info;
  ByteWriter go;
  go.u32(static_cast<uint32_t>(export_name.size())).str(export_name).u16(1).u16(kInfoBlockSize);
  MEMSYNC_TRY(send_option(ch, kOptGo, go.data()));
  bool have_export = false;
  for (;;) {
    auto r = read_reply(ch, kOptGo);
    if (!r) return r.status();
    if (r->type == kRepAck) {
      if (!have_export) return Status::error(EPROTO, "server acknowledged GO without NBD_INFO_EXPORT");
      return info;
    }
    if (r->type == kRepErrUnsup) break;  // an old server: use EXPORT_NAME
    if (r->type & kRepErrBit) return refused(*r, export_name);
    if (r->type != kRepInfo) continue;  // unknown non-error replies are ignored
    ByteReader rd(r->data);
    uint16_t type = rd.u16();
    if (type == kInfoExport) {
      info.size = rd.u64();
      info.transmission_flags = rd.u16();
      if (!rd.ok()) return Status::error(EPROTO, "short NBD_INFO_EXPORT");
      have_export = true;
    } else if (type == kInfoBlockSize) {
      uint32_t mn = rd.u32(), pref = rd.u32(), mx = rd.u32();
      if (!rd.ok()) return Status::error(EPROTO, "short NBD_INFO_BLOCK_SIZE");
      if (mn == 0 || (mn & (mn - 1)) || pref < mn || (pref & (pref - 1)) || mx < pref)
        return Status::error(EPROTO, "server sent inconsistent block sizes");
      info.min_block = mn;
      info.preferred_block = pref;
      info.max_payload = mx;
      info.block_size_known = true;
    }
  }
  MEMSYNC_TRY(send_option(ch, kOptExportName, std::as_bytes(std::span(export_name.data(), export_name.size()))));
  std::byte reply[10 + 124];
  size_t want = no_zeroes ? 10 : sizeof reply;
  Status st = ch.read_exact(std::span(reply, want));
  if (!st) return Status::error(ENOENT, "server closed the connection: it refused export '" + export_name + "'");
  info.size = load_be64(reply);
  info.transmission_flags = load_be16(reply + 8);
  info.used_export_name = true;
  return info;
}

}  // namespace memsync::nbd
