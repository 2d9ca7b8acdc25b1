// Frames and fixed-layout messages of the memsync wire protocol v1
// (man/memsync-wire.7): encoding and checked decoding, without I/O.
//
// Every decoder takes bytes from the network and refuses, with EPROTO or
// EINVAL, anything outside the specification's limits: callers check a
// header (decode_header) before reading or allocating its payload.
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "util/status.hpp"
#include "wire/protocol.hpp"

namespace memsync::wire {

struct FrameHeader {
  uint16_t type = 0;
  uint16_t flags = 0;
  uint64_t id = 0;
  uint32_t length = 0;

  bool is_reply() const { return type & kReplyBit; }
  bool is_error() const { return is_reply() && (flags & kFlagError); }
};

void encode_header(const FrameHeader& h, std::span<std::byte, kHeaderSize> out);
// REQUIRES: in.size() == kHeaderSize. Fails (EPROTO) on a bad magic or a
// length above max_length.
Result<FrameHeader> decode_header(std::span<const std::byte> in, uint32_t max_length);

struct Hello {
  uint16_t version_min = kVersion;
  uint16_t version_max = kVersion;
  uint64_t features = 0;
  uint32_t max_payload = kDefaultPayload;
  uint32_t max_inflight = kDefaultInflight;
  // The same on every connection of one client, random: a server fences
  // (stops, drains) the client's older connections before it answers, so
  // a request resent after a reconnect never races its lost original.
  // 0: no fencing.
  uint64_t client_id = 0;
  std::string name;  // the client, for logs
};
std::vector<std::byte> encode_hello(const Hello& h);
Result<Hello> decode_hello(std::span<const std::byte> payload);

struct HelloReply {
  uint16_t version = kVersion;
  uint64_t features = 0;
  uint32_t max_payload = kDefaultPayload;
  uint32_t max_inflight = kDefaultInflight;
  uint64_t size = 0;
  uint32_t chunk_size = 4096;
  bool read_only = false;
  // Equal ids mean the same content: a reconnecting client refuses a store
  // whose id changed (a memory server that restarted is empty). 0: the
  // content outlives the server (files), or the server cannot tell.
  uint64_t store_id = 0;
};
std::vector<std::byte> encode_hello_reply(const HelloReply& r);
Result<HelloReply> decode_hello_reply(std::span<const std::byte> payload);

// What a server offers; negotiate() answers a client's HELLO with it:
// the version both speak, the features both want (and this code knows),
// the smaller of the limits. EPROTONOSUPPORT when no version is shared.
struct ServerTerms {
  uint64_t features = kFeaturesKnown;
  uint32_t max_payload = kDefaultPayload;
  uint32_t max_inflight = kDefaultInflight;
  uint64_t size = 0;
  uint32_t chunk_size = 4096;
  bool read_only = false;
  uint64_t store_id = 0;
};
Result<HelloReply> negotiate(const Hello& hello, const ServerTerms& terms);
// The client's check of a server's answer to its HELLO.
Status check_hello_reply(const Hello& asked, const HelloReply& got);

struct ErrorReply {
  uint32_t code = 0;     // an errno number
  std::string message;
};
std::vector<std::byte> encode_error(const ErrorReply& e);
// Messages longer than the limit are cut, not refused: an error must get out.
Result<ErrorReply> decode_error(std::span<const std::byte> payload);
// The Status a client reports for an error reply.
Status to_status(const ErrorReply& e, const std::string& what);

// A range request (READ, TRIM, WRITE_ZEROES): u64 offset, u32 length.
struct Range {
  uint64_t offset = 0;
  uint32_t length = 0;
};
std::vector<std::byte> encode_range(const Range& r);
Result<Range> decode_range(std::span<const std::byte> payload);
// Checks a range against the store's size (ERANGE) and a length limit
// (EINVAL for 0 or more than max_length).
Status check_range(const Range& r, uint64_t size, uint64_t max_length);

}  // namespace memsync::wire
