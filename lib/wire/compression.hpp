// Per-payload LZ4 for the memsync wire protocol (feature LZ4; see
// man/memsync-wire.7, COMPRESSION): a compressed part is a u32 raw length
// followed by one LZ4 block. A sender compresses only when that is smaller
// than the raw bytes; a receiver checks the raw length against what it
// expects before decompressing, and refuses a block that does not
// decompress to exactly that many bytes.
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "util/status.hpp"

namespace memsync::wire {

// The compressed form of raw (u32 raw length + LZ4 block) if it is smaller
// than raw; otherwise an empty vector: send raw, without the flag.
std::vector<std::byte> compress_payload(std::span<const std::byte> raw);

// Decompresses `part` into out, whose size is the raw length the receiver
// expects (REQUIRES: out.size() <= the negotiated max payload). EPROTO for a
// raw length other than out.size() or a corrupt block.
Status decompress_payload(std::span<const std::byte> part, std::span<std::byte> out);

}  // namespace memsync::wire
