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
  auto packed = compress_payload(raw);
  ASSERT_FALSE(packed.empty());
  std::vector<std::byte> part(packed.data(), packed.data() + packed.size());
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

// The gate stops trying on data that does not shrink (1, 2, 4 ... 64
// payloads skipped), and a payload that shrinks reopens it at once.
TEST(WireCompression, GateBacksOffOnIncompressibleData) {
  std::vector<std::byte> random(64 * 1024);
  std::mt19937 rng(7);
  for (auto& b : random) b = std::byte(rng() & 0xff);
  std::vector<std::byte> zeros(64 * 1024);
  CompressionGate gate;
  // 1 attempt, 1 skipped, 1 attempt, 2 skipped, 1, 4, 1, 8, 1, 16, 1, 32, 1, 64, 1, 64 ...
  // While it skips, even compressible payloads go raw.
  EXPECT_TRUE(gate.compress(random).empty());  // attempt: streak 1, skip 1
  EXPECT_TRUE(gate.compress(zeros).empty());   // skipped
  EXPECT_TRUE(gate.compress(random).empty());  // attempt: skip 2
  EXPECT_TRUE(gate.compress(zeros).empty());
  EXPECT_TRUE(gate.compress(zeros).empty());
  EXPECT_FALSE(gate.compress(zeros).empty());  // attempt, shrinks: open again
  EXPECT_FALSE(gate.compress(zeros).empty());
  // After a long streak it skips at most 64 before trying again.
  for (int i = 0; i < 300; ++i) EXPECT_TRUE(gate.compress(random).empty());
  int skipped = 0;
  while (gate.compress(zeros).empty() && skipped <= 64) ++skipped;
  EXPECT_GE(skipped, 1);
  EXPECT_LE(skipped, 64);
}

}  // namespace
