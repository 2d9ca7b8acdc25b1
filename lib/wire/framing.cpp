#include "wire/framing.hpp"

#include <array>
#include <vector>

namespace memsync::wire {

Status send_frame(Channel& ch, const FrameHeader& h, std::span<const std::span<const std::byte>> parts) {
  std::array<std::byte, kHeaderSize> head;
  FrameHeader with_length = h;
  uint64_t total = 0;
  for (auto& p : parts) total += p.size();
  with_length.length = static_cast<uint32_t>(total);
  encode_header(with_length, head);
  std::vector<std::span<const std::byte>> all;
  all.reserve(parts.size() + 1);
  all.emplace_back(head);
  for (auto& p : parts)
    if (!p.empty()) all.push_back(p);
  return ch.write(std::span<const std::span<const std::byte>>(all));
}

Result<FrameHeader> read_header(Channel& ch, uint32_t max_length) {
  std::array<std::byte, kHeaderSize> head;
  MEMSYNC_TRY(ch.read_exact(head));
  return decode_header(head, max_length);
}

}  // namespace memsync::wire
