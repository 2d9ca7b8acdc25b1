#include "wire/compression.hpp"

#include <lz4.h>

#include <algorithm>
#include <limits>

#include "util/endian.hpp"

namespace memsync::wire {

ByteBuffer compress_payload(std::span<const std::byte> raw) {
  if (raw.size() < 64 || raw.size() > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) return {};
  const int src = static_cast<int>(raw.size());
  // Only worth it if the result is smaller than the raw bytes: cap the
  // output there, and LZ4 gives up (returns 0) when it would not fit.
  const int cap = src - 4 - 1;
  ByteBuffer out(4 + static_cast<size_t>(cap));
  int n = LZ4_compress_default(reinterpret_cast<const char*>(raw.data()), reinterpret_cast<char*>(out.data() + 4), src, cap);
  if (n <= 0) return {};
  store_be32(out.data(), static_cast<uint32_t>(raw.size()));
  out.shrink(4 + static_cast<size_t>(n));
  return out;
}

bool CompressionGate::try_now() {
  for (uint32_t s = skip_.load(std::memory_order_relaxed); s > 0;)
    if (skip_.compare_exchange_weak(s, s - 1, std::memory_order_relaxed)) return false;
  return true;
}

ByteBuffer CompressionGate::attempt(std::span<const std::byte> raw) {
  constexpr uint32_t kLongestSkip = 64;
  ByteBuffer out = compress_payload(raw);
  if (!out.empty()) {
    streak_.store(0, std::memory_order_relaxed);
  } else if (raw.size() >= 64) {  // tiny payloads say nothing about the data
    uint32_t k = std::min<uint32_t>(streak_.fetch_add(1, std::memory_order_relaxed), 6);
    skip_.store(std::min(kLongestSkip, 1u << k), std::memory_order_relaxed);
  }
  return out;
}

Status decompress_payload(std::span<const std::byte> part, std::span<std::byte> out) {
  if (part.size() < 4) return Status::error(EPROTO, "memsync wire protocol: compressed payload without its length");
  uint32_t raw = load_be32(part.data());
  if (raw != out.size())
    return Status::error(EPROTO, "memsync wire protocol: compressed payload of " + std::to_string(raw) +
                                     " bytes where " + std::to_string(out.size()) + " were expected");
  if (part.size() - 4 > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      out.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    return Status::error(EPROTO, "memsync wire protocol: compressed payload too large");
  int n = LZ4_decompress_safe(reinterpret_cast<const char*>(part.data() + 4), reinterpret_cast<char*>(out.data()),
                              static_cast<int>(part.size() - 4), static_cast<int>(out.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size())
    return Status::error(EPROTO, "memsync wire protocol: corrupt LZ4 block");
  return Status::ok();
}

}  // namespace memsync::wire
