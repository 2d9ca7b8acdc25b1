// The byte-order codec: every big-endian encode and decode in memsync.
//
// ByteWriter appends network-order integers to a std::string-like byte
// buffer. ByteReader consumes them from a span and reports truncation
// (ok() turns false, reads return 0) instead of reading past the end.
// Thread safety: values; no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace memsync {

inline void store_be16(std::byte* p, uint16_t v) { v = __builtin_bswap16(v); std::memcpy(p, &v, 2); }
inline void store_be32(std::byte* p, uint32_t v) { v = __builtin_bswap32(v); std::memcpy(p, &v, 4); }
inline void store_be64(std::byte* p, uint64_t v) { v = __builtin_bswap64(v); std::memcpy(p, &v, 8); }
inline uint16_t load_be16(const std::byte* p) { uint16_t v; std::memcpy(&v, p, 2); return __builtin_bswap16(v); }
inline uint32_t load_be32(const std::byte* p) { uint32_t v; std::memcpy(&v, p, 4); return __builtin_bswap32(v); }
inline uint64_t load_be64(const std::byte* p) { uint64_t v; std::memcpy(&v, p, 8); return __builtin_bswap64(v); }

class ByteWriter {
 public:
  ByteWriter& u8(uint8_t v) { buf_.push_back(std::byte{v}); return *this; }
  ByteWriter& u16(uint16_t v) { grow(2); store_be16(end(2), v); return *this; }
  ByteWriter& u32(uint32_t v) { grow(4); store_be32(end(4), v); return *this; }
  ByteWriter& u64(uint64_t v) { grow(8); store_be64(end(8), v); return *this; }
  ByteWriter& bytes(std::span<const std::byte> b) { buf_.insert(buf_.end(), b.begin(), b.end()); return *this; }
  ByteWriter& str(std::string_view s) { return bytes(std::as_bytes(std::span(s.data(), s.size()))); }
  ByteWriter& zeros(size_t n) { buf_.resize(buf_.size() + n); return *this; }

  std::span<const std::byte> data() const { return buf_; }
  size_t size() const { return buf_.size(); }
  void clear() { buf_.clear(); }

 private:
  void grow(size_t n) { buf_.resize(buf_.size() + n); }
  std::byte* end(size_t n) { return buf_.data() + buf_.size() - n; }
  std::vector<std::byte> buf_;
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const std::byte> data) : data_(data) {}

  uint8_t u8() { auto p = take(1); return p ? static_cast<uint8_t>(*p) : 0; }
  uint16_t u16() { auto p = take(2); return p ? load_be16(p) : 0; }
  uint32_t u32() { auto p = take(4); return p ? load_be32(p) : 0; }
  uint64_t u64() { auto p = take(8); return p ? load_be64(p) : 0; }
  // A string of n bytes; empty and !ok() if fewer remain.
  std::string str(size_t n) {
    auto p = take(n);
    return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
  }

  bool ok() const { return ok_; }
  size_t remaining() const { return data_.size() - pos_; }

 private:
  const std::byte* take(size_t n) {
    if (!ok_ || n > remaining()) { ok_ = false; return nullptr; }
    const std::byte* p = data_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::span<const std::byte> data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace memsync
