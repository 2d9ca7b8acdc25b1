#include "backend/store.hpp"

#include <algorithm>
#include <memory>

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

Status Store::read_into(const DirectRange& dst, uint64_t offset, uint64_t length) {
  if (dst.memory) return read_at(std::span(dst.memory, static_cast<size_t>(length)), offset);
  static constexpr uint64_t kPiece = 1 << 20;  // a bounded buffer, never length-sized
  auto buf = std::make_unique_for_overwrite<std::byte[]>(static_cast<size_t>(std::min(length, kPiece)));
  for (uint64_t done = 0; done < length;) {
    std::span piece(buf.get(), static_cast<size_t>(std::min(length - done, kPiece)));
    MEMSYNC_TRY(read_at(piece, offset + done));
    MEMSYNC_TRY(pwrite_all(dst.fd, piece, dst.file_offset + done, "the destination file"));
    done += piece.size();
  }
  return Status::ok();
}

Status Store::resize(uint64_t) { return Status::unsupported("resize is not supported by " + describe()); }

}  // namespace memsync
