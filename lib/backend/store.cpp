#include "backend/store.hpp"

#include <algorithm>

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

Status Store::resize(uint64_t) { return Status::unsupported("resize is not supported by " + describe()); }

}  // namespace memsync
