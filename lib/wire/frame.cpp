#include "wire/frame.hpp"

#include <algorithm>

#include "util/endian.hpp"

namespace memsync::wire {
namespace {

Status protocol_error(const std::string& what) { return Status::error(EPROTO, "memsync wire protocol: " + what); }

bool power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

std::vector<std::byte> to_vector(const ByteWriter& w) { return {w.data().begin(), w.data().end()}; }

}  // namespace

void encode_header(const FrameHeader& h, std::span<std::byte, kHeaderSize> out) {
  store_be32(out.data(), kMagic);
  store_be16(out.data() + 4, h.type);
  store_be16(out.data() + 6, h.flags);
  store_be64(out.data() + 8, h.id);
  store_be32(out.data() + 16, h.length);
}

Result<FrameHeader> decode_header(std::span<const std::byte> in, uint32_t max_length) {
  if (in.size() != kHeaderSize) return protocol_error("short frame header");
  if (load_be32(in.data()) != kMagic) return protocol_error("bad frame magic (not a memsync wire peer?)");
  FrameHeader h;
  h.type = load_be16(in.data() + 4);
  h.flags = load_be16(in.data() + 6);
  h.id = load_be64(in.data() + 8);
  h.length = load_be32(in.data() + 16);
  if (h.length > max_length)
    return protocol_error("frame of " + std::to_string(h.length) + " bytes exceeds the limit of " +
                          std::to_string(max_length));
  return h;
}

std::vector<std::byte> encode_hello(const Hello& h) {
  ByteWriter w;
  std::string_view name(h.name.data(), std::min(h.name.size(), kMaxNameLength));
  w.u16(h.version_min).u16(h.version_max).u64(h.features).u32(h.max_payload).u32(h.max_inflight).u64(h.client_id);
  w.u16(static_cast<uint16_t>(name.size())).str(name);
  return to_vector(w);
}

Result<Hello> decode_hello(std::span<const std::byte> payload) {
  ByteReader r(payload);
  Hello h;
  h.version_min = r.u16();
  h.version_max = r.u16();
  h.features = r.u64();
  h.max_payload = r.u32();
  h.max_inflight = r.u32();
  h.client_id = r.u64();
  uint16_t n = r.u16();
  if (!r.ok()) return protocol_error("short HELLO");
  if (n > kMaxNameLength) return protocol_error("HELLO client name longer than 255 bytes");
  h.name = r.str(n);
  if (!r.ok()) return protocol_error("short HELLO client name");
  if (r.remaining() != 0) return protocol_error("trailing bytes after HELLO");
  if (h.version_min == 0 || h.version_min > h.version_max) return protocol_error("HELLO with an empty version range");
  return h;
}

std::vector<std::byte> encode_hello_reply(const HelloReply& rep) {
  ByteWriter w;
  w.u16(rep.version).u64(rep.features).u32(rep.max_payload).u32(rep.max_inflight).u64(rep.size);
  w.u32(rep.chunk_size).u8(rep.read_only ? 1 : 0).u64(rep.store_id);
  return to_vector(w);
}

Result<HelloReply> decode_hello_reply(std::span<const std::byte> payload) {
  ByteReader r(payload);
  HelloReply rep;
  rep.version = r.u16();
  rep.features = r.u64();
  rep.max_payload = r.u32();
  rep.max_inflight = r.u32();
  rep.size = r.u64();
  rep.chunk_size = r.u32();
  uint8_t ro = r.u8();
  rep.store_id = r.u64();
  if (!r.ok()) return protocol_error("short HELLO reply");
  if (r.remaining() != 0) return protocol_error("trailing bytes after the HELLO reply");
  if (ro > 1) return protocol_error("HELLO reply with a read-only value other than 0 or 1");
  rep.read_only = ro == 1;
  return rep;
}

Result<HelloReply> negotiate(const Hello& hello, const ServerTerms& terms) {
  if (hello.version_min > kVersion || hello.version_max < kVersion)
    return Status::error(EPROTONOSUPPORT, "the client speaks versions " + std::to_string(hello.version_min) + "-" +
                                              std::to_string(hello.version_max) + "; this server speaks 1");
  HelloReply rep;
  rep.version = kVersion;
  rep.features = hello.features & terms.features & kFeaturesKnown;
  uint32_t wanted = hello.max_payload ? hello.max_payload : kDefaultPayload;
  rep.max_payload = std::clamp(std::min(wanted, terms.max_payload), kMinPayload, kMaxPayload);
  uint32_t inflight = hello.max_inflight ? hello.max_inflight : kDefaultInflight;
  rep.max_inflight = std::clamp(std::min(inflight, terms.max_inflight), 1u, kMaxInflight);
  rep.size = terms.size;
  rep.chunk_size = terms.chunk_size;
  rep.read_only = terms.read_only;
  rep.store_id = terms.store_id;
  return rep;
}

Status check_hello_reply(const Hello& asked, const HelloReply& got) {
  if (got.version < asked.version_min || got.version > asked.version_max)
    return protocol_error("the server chose version " + std::to_string(got.version) + ", which we did not offer");
  if (got.features & ~asked.features) return protocol_error("the server accepted features we did not offer");
  if (got.max_payload < kMinPayload || got.max_payload > kMaxPayload ||
      (asked.max_payload && got.max_payload > asked.max_payload))
    return protocol_error("the server's maximum payload " + std::to_string(got.max_payload) + " is out of range");
  if (got.max_inflight < 1 || got.max_inflight > kMaxInflight) return protocol_error("the server's in-flight limit is out of range");
  if (!power_of_two(got.chunk_size)) return protocol_error("the server's chunk size is not a power of two");
  return Status::ok();
}

std::vector<std::byte> encode_error(const ErrorReply& e) {
  ByteWriter w;
  std::string_view msg(e.message.data(), std::min(e.message.size(), kMaxErrorMessage));
  w.u32(e.code).u16(static_cast<uint16_t>(msg.size())).str(msg);
  return to_vector(w);
}

Result<ErrorReply> decode_error(std::span<const std::byte> payload) {
  ByteReader r(payload);
  ErrorReply e;
  e.code = r.u32();
  uint16_t n = r.u16();
  if (!r.ok()) return protocol_error("short error reply");
  if (n > kMaxErrorMessage) return protocol_error("error message longer than 1024 bytes");
  e.message = r.str(n);
  if (!r.ok() || r.remaining() != 0) return protocol_error("error reply of the wrong length");
  if (e.code == 0) return protocol_error("error reply with code 0");
  return e;
}

Status to_status(const ErrorReply& e, const std::string& what) {
  // Any code is accepted; out-of-range ones become EIO locally.
  int code = e.code < 4096 ? static_cast<int>(e.code) : EIO;
  return Status::error(code, what + ": the remote says: " + (e.message.empty() ? "error " + std::to_string(e.code) : e.message));
}

std::vector<std::byte> encode_range(const Range& rg) {
  ByteWriter w;
  w.u64(rg.offset).u32(rg.length);
  return to_vector(w);
}

Result<Range> decode_range(std::span<const std::byte> payload) {
  if (payload.size() != 12) return Status::invalid("a range request carries 12 bytes, not " + std::to_string(payload.size()));
  ByteReader r(payload);
  Range rg;
  rg.offset = r.u64();
  rg.length = r.u32();
  return rg;
}

Status check_range(const Range& rg, uint64_t size, uint64_t max_length) {
  if (rg.length == 0 || rg.length > max_length)
    return Status::invalid("length " + std::to_string(rg.length) + " is not between 1 and " + std::to_string(max_length));
  if (rg.offset > size || rg.length > size - rg.offset)
    return Status::error(ERANGE, "range " + std::to_string(rg.offset) + "+" + std::to_string(rg.length) +
                                     " is beyond the end (" + std::to_string(size) + ")");
  return Status::ok();
}

}  // namespace memsync::wire
