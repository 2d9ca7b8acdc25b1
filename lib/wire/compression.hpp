// Per-payload LZ4 for the memsync wire protocol (feature LZ4; see
// man/memsync-wire.7, COMPRESSION): a compressed part is a u32 raw length
// followed by one LZ4 block. A sender compresses only when that is smaller
// than the raw bytes; a receiver checks the raw length against what it
// expects before decompressing, and refuses a block that does not
// decompress to exactly that many bytes.
// Thread safety: pure functions; CompressionGate from any threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>

#include "util/byte_buffer.hpp"
#include "util/status.hpp"

namespace memsync::wire {

// The compressed form of raw (u32 raw length + LZ4 block) if it is smaller
// than raw; otherwise an empty buffer: send raw, without the flag.
ByteBuffer compress_payload(std::span<const std::byte> raw);

// One sender's compress_payload that stops trying on data that does not
// compress. After a payload that did not shrink, the next ones go raw
// without an attempt: 1, then 2, 4 ... up to 64 while the failures go on;
// one that shrinks ends the streak. Random data (encrypted, already
// compressed) then costs one LZ4 pass in 64 payloads instead of one per
// payload, and a switch to compressible data is noticed within 64.
class CompressionGate {
 public:
  // compress_payload(raw), or empty without trying when the gate is shut.
  ByteBuffer compress(std::span<const std::byte> raw) { return try_now() ? attempt(raw) : ByteBuffer(); }
  // The two halves, for a sender that can skip reading the bytes into
  // memory when it will not compress them (sendfile): try_now() says
  // whether to attempt this payload (a "no" uses up one skip), attempt()
  // compresses and remembers whether it shrank.
  bool try_now();
  ByteBuffer attempt(std::span<const std::byte> raw);

 private:
  // A heuristic shared by threads: relaxed atomics, races only cost an
  // attempt more or less.
  std::atomic<uint32_t> skip_{0};    // payloads still to send without trying
  std::atomic<uint32_t> streak_{0};  // attempts in a row that did not shrink
};

// Decompresses `part` into out, whose size is the raw length the receiver
// expects (REQUIRES: out.size() <= the negotiated max payload). EPROTO for a
// raw length other than out.size() or a corrupt block.
Status decompress_payload(std::span<const std::byte> part, std::span<std::byte> out);

}  // namespace memsync::wire
