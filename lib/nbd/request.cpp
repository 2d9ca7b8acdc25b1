#include "nbd/request.hpp"

#include "nbd/protocol.hpp"
#include "util/endian.hpp"

namespace memsync::nbd {

Result<Request> decode_request(std::span<const std::byte> header) {
  if (header.size() < kRequestHeaderSize) return Status::error(EPROTO, "truncated request header");
  ByteReader r(header);
  uint32_t magic = r.u32();
  if (magic != kRequestMagic) return Status::error(EPROTO, "bad request magic " + std::to_string(magic));
  Request req;
  req.flags = r.u16();
  req.type = r.u16();
  req.cookie = r.u64();
  req.offset = r.u64();
  req.length = r.u32();
  return req;
}

Verdict check_request(const Request& req, const RequestLimits& l) {
  auto fail = [](uint32_t e, std::string m) { return Verdict{e, std::move(m)}; };
  const bool read_only = l.transmission_flags & kFlagReadOnly;
  uint16_t allowed = (l.transmission_flags & kFlagSendFua) ? kCmdFlagFua : 0;
  // The spec wants EPERM for writes and trims on a read-only export, even
  // though TRIM and WRITE_ZEROES are not offered there.
  if (read_only && (req.type == kCmdWrite || req.type == kCmdTrim || req.type == kCmdWriteZeroes))
    return fail(kEperm, std::string(command_name(req.type)) + " on a read-only export");
  switch (req.type) {
    case kCmdRead:
      if (l.transmission_flags & kFlagSendDf) allowed |= kCmdFlagDf;
      break;
    case kCmdWrite: case kCmdFlush: case kCmdCache:
      break;
    case kCmdTrim:
      if (!(l.transmission_flags & kFlagSendTrim)) return fail(kEinval, "TRIM was not offered");
      break;
    case kCmdWriteZeroes:
      if (!(l.transmission_flags & kFlagSendWriteZeroes)) return fail(kEinval, "WRITE_ZEROES was not offered");
      allowed |= kCmdFlagNoHole;
      if (l.transmission_flags & kFlagSendFastZero) allowed |= kCmdFlagFastZero;
      break;
    case kCmdBlockStatus:
      if (!l.base_allocation) return fail(kEinval, "BLOCK_STATUS without a negotiated metadata context");
      allowed |= kCmdFlagReqOne;
      break;
    default:
      return fail(kEinval, "unknown command " + std::to_string(req.type));
  }
  if (req.flags & ~allowed)
    return fail(kEinval, std::string("unsupported flags for ") + command_name(req.type));

  if (req.type == kCmdFlush) {
    if (req.offset != 0 || req.length != 0) return fail(kEinval, "FLUSH with nonzero offset or length");
    return {};
  }
  if ((req.type == kCmdRead || req.type == kCmdWrite) && req.length > l.max_payload)
    return fail(req.type == kCmdRead && (req.flags & kCmdFlagDf) ? kEoverflow : kEinval,
                std::string(command_name(req.type)) + " of " + std::to_string(req.length) +
                    " bytes is over the maximum payload of " + std::to_string(l.max_payload));
  if (req.length == 0 && req.type != kCmdCache)
    return fail(kEinval, std::string(command_name(req.type)) + " of zero length");
  if (req.offset > l.export_size || req.length > l.export_size - req.offset)
    return fail(req.type == kCmdWrite || req.type == kCmdWriteZeroes ? kEnospc : kEinval,
                std::string(command_name(req.type)) + " beyond the end of the export (offset " +
                    std::to_string(req.offset) + ", length " + std::to_string(req.length) + ", size " +
                    std::to_string(l.export_size) + ")");
  if (l.min_block > 1 && (req.offset % l.min_block || req.length % l.min_block) && req.type != kCmdBlockStatus)
    return fail(kEinval, std::string(command_name(req.type)) + " not aligned to the minimum block size " +
                             std::to_string(l.min_block));
  return {};
}

uint32_t nbd_error(const Status& st) {
  switch (st.code()) {
    case 0: return 0;
    case EPERM: case EROFS: case EACCES: return kEperm;
    case ENOSPC: case EDQUOT: case EFBIG: return kEnospc;
    case EINVAL: return kEinval;
    case ENOMEM: return kEnomem;
    case EOVERFLOW: return kEoverflow;
    case EOPNOTSUPP: return kEnotsup;
    case ESHUTDOWN: return kEshutdown;
    default: return kEio;
  }
}

const char* command_name(uint16_t type) {
  switch (type) {
    case kCmdRead: return "READ";
    case kCmdWrite: return "WRITE";
    case kCmdDisc: return "DISC";
    case kCmdFlush: return "FLUSH";
    case kCmdTrim: return "TRIM";
    case kCmdCache: return "CACHE";
    case kCmdWriteZeroes: return "WRITE_ZEROES";
    case kCmdBlockStatus: return "BLOCK_STATUS";
    default: return "unknown command";
  }
}

}  // namespace memsync::nbd
