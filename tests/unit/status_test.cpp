// Status kinds and Result behaviour.
#include <gtest/gtest.h>

#include "util/endian.hpp"
#include "util/status.hpp"

using namespace memsync;

TEST(Status, KindsFollowTheCode) {
  EXPECT_TRUE(Status::ok().is_ok());
  EXPECT_TRUE(Status::error(EAGAIN, "x").is_retry());
  EXPECT_TRUE(Status::error(ECONNRESET, "x").is_reconnect());
  EXPECT_TRUE(Status::error(EPIPE, "x").is_reconnect());
  EXPECT_TRUE(Status::unsupported("x").is_unsupported());
  EXPECT_FALSE(Status::io("x").is_retry());
  EXPECT_FALSE(Status::io("x").is_reconnect());
}

TEST(Status, FromErrnoAndContext) {
  Status s = Status::from_errno("open /nope", ENOENT);
  EXPECT_EQ(s.code(), ENOENT);
  EXPECT_EQ(s.message(), "open /nope: No such file or directory");
  EXPECT_EQ(s.with_context("backend").message(), "backend: open /nope: No such file or directory");
  EXPECT_EQ(Status::ok().with_context("x").message(), "");
}

TEST(Result, ValueAndError) {
  Result<int> good(5);
  EXPECT_TRUE(good);
  EXPECT_EQ(*good, 5);
  Result<int> bad(Status::invalid("no"));
  EXPECT_FALSE(bad);
  EXPECT_EQ(bad.status().code(), EINVAL);
  // An ok Status cannot make a failed Result look successful.
  Result<int> odd{Status::ok()};
  EXPECT_FALSE(odd);
}

TEST(ResultDeathTest, ValueOfFailedResultAborts) {
  Result<int> bad(Status::invalid("boom"));
  EXPECT_DEATH((void)bad.value(), "boom");
}

TEST(Codec, RoundTripAndTruncation) {
  ByteWriter w;
  w.u8(1).u16(0x0203).u32(0x04050607).u64(0x08090a0b0c0d0e0fULL).str("hi");
  ByteReader r(w.data());
  EXPECT_EQ(r.u8(), 1);
  EXPECT_EQ(r.u16(), 0x0203);
  EXPECT_EQ(r.u32(), 0x04050607u);
  EXPECT_EQ(r.u64(), 0x08090a0b0c0d0e0fULL);
  EXPECT_EQ(r.str(2), "hi");
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.u32(), 0u);  // past the end: zero and not ok, never a read beyond
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(w.data()[1], std::byte{0x02});  // network byte order
}
