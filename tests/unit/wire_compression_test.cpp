// Per-payload LZ4 of the wire protocol: only when it shrinks, and refused
// unless it decompresses to exactly the expected length.
#include <gtest/gtest.h>

#include <random>

#include "util/endian.hpp"
#include "wire/compression.hpp"

using namespace memsync;
using namespace memsync::wire;

namespace {

TEST(WireCompression, CompressibleDataRoundTrips) {
  std::vector<std::byte> raw(64 * 1024);
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = std::byte((i / 512) & 0xff);
  auto part = compress_payload(raw);
  ASSERT_FALSE(part.empty());
  EXPECT_LT(part.size(), raw.size() / 4);
  EXPECT_EQ(load_be32(part.data()), raw.size());
  std::vector<std::byte> back(raw.size());
  ASSERT_TRUE(decompress_payload(part, back));
  EXPECT_EQ(back, raw);
}

TEST(WireCompression, IncompressibleDataIsSentRaw) {
  std::vector<std::byte> raw(64 * 1024);
  std::mt19937 rng(42);
  for (auto& b : raw) b = std::byte(rng() & 0xff);
  EXPECT_TRUE(compress_payload(raw).empty());
  EXPECT_TRUE(compress_payload(std::vector<std::byte>(16)).empty());  // too small to bother
}

TEST(WireCompression, WrongLengthOrCorruptBlockIsRefused) {
  std::vector<std::byte> raw(8192, std::byte{7});
  auto part = compress_payload(raw);
  ASSERT_FALSE(part.empty());
  std::vector<std::byte> small(4096);
  EXPECT_EQ(decompress_payload(part, small).code(), EPROTO);  // raw length says 8192
  std::vector<std::byte> out(8192);
  auto cut = part;
  cut.resize(cut.size() - 3);
  EXPECT_EQ(decompress_payload(cut, out).code(), EPROTO);
  EXPECT_EQ(decompress_payload(std::span(part.data(), 3), out).code(), EPROTO);
  auto lie = part;
  store_be32(lie.data(), 4096);  // a raw length that does not match the block
  std::vector<std::byte> out4k(4096);
  EXPECT_EQ(decompress_payload(lie, out4k).code(), EPROTO);
}

}  // namespace
