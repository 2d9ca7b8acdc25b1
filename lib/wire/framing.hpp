// Frames over a Channel: one header plus payload parts per write (replies
// from many threads never interleave when the caller holds its write lock),
// and header reads checked against the negotiated limit before any payload
// is read.
// Thread safety: as Channel (one reader; writers serialised by the caller).
#pragma once

#include <initializer_list>
#include <span>

#include "net/channel.hpp"
#include "wire/frame.hpp"

namespace memsync::wire {

Status send_frame(Channel& ch, const FrameHeader& h, std::span<const std::span<const std::byte>> parts);
inline Status send_frame(Channel& ch, const FrameHeader& h, std::initializer_list<std::span<const std::byte>> parts = {}) {
  return send_frame(ch, h, std::span<const std::span<const std::byte>>(parts.begin(), parts.size()));
}
Result<FrameHeader> read_header(Channel& ch, uint32_t max_length);

}  // namespace memsync::wire
