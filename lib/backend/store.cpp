#include "backend/store.hpp"

#include <algorithm>

#include "util/byte_buffer.hpp"
#include "util/file_io.hpp"

namespace memsync {

Status Store::trim(uint64_t, uint64_t) { return Status::unsupported("trim is not supported by " + describe()); }

Status Store::write_zeroes(uint64_t offset, uint64_t length, bool) {
  // Generic fallback: write zero buffers. Bounded buffer, never length-sized.
  static constexpr uint64_t kChunk = 1 << 20;
  std::vector<std::byte> zeros(static_cast<size_t>(std::min(length, kChunk)));
  while (length > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(length, zeros.size()));
    MEMSYNC_TRY(write_at(std::span(zeros.data(), n), offset));
    offset += n;
    length -= n;
  }
  return Status::ok();
}

Status Store::extents(uint64_t, uint64_t length, std::vector<Extent>& out) {
  out.push_back(Extent{length, false, false});
  return Status::ok();
}

Status Store::prefetch(uint64_t, uint64_t) { return Status::ok(); }

Status Store::DirectRange::pwrite(std::span<const std::byte> bytes, uint64_t at) const {
  std::unique_lock<std::mutex> held;
  if (write_lock) held = std::unique_lock(*write_lock);
  return pwrite_all(fd, bytes, file_offset + at, "the destination file");
}

Status Store::read_into(const DirectRange& dst, uint64_t offset, uint64_t length) {
  if (dst.memory) return read_at(std::span(dst.memory, static_cast<size_t>(length)), offset);
  static constexpr uint64_t kPiece = 1 << 20;  // a bounded buffer, never length-sized
  ByteBuffer buf(static_cast<size_t>(std::min(length, kPiece)));
  for (uint64_t done = 0; done < length;) {
    std::span piece(buf.data(), static_cast<size_t>(std::min(length - done, kPiece)));
    MEMSYNC_TRY(read_at(piece, offset + done));
    MEMSYNC_TRY(dst.pwrite(piece, done));
    done += piece.size();
  }
  return Status::ok();
}

Status Store::resize(uint64_t) { return Status::unsupported("resize is not supported by " + describe()); }

}  // namespace memsync
