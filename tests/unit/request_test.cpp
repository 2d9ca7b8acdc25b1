// Request decoding and the validation every request passes (NBD spec rules).
#include <gtest/gtest.h>

#include "nbd/protocol.hpp"
#include "nbd/request.hpp"
#include "util/endian.hpp"

using namespace memsync;
using namespace memsync::nbd;

namespace {

RequestLimits limits(uint16_t extra_flags = 0) {
  RequestLimits l;
  l.export_size = 1 << 20;
  l.max_payload = 65536;
  l.transmission_flags = kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagSendTrim | kFlagSendWriteZeroes |
                         kFlagSendFastZero | extra_flags;
  return l;
}

Request req(uint16_t type, uint64_t off, uint32_t len, uint16_t flags = 0) {
  Request r;
  r.type = type;
  r.offset = off;
  r.length = len;
  r.flags = flags;
  return r;
}

}  // namespace

TEST(Request, Decode) {
  ByteWriter w;
  w.u32(kRequestMagic).u16(kCmdFlagFua).u16(kCmdWrite).u64(0x1122).u64(4096).u32(512);
  auto r = decode_request(w.data());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->type, kCmdWrite);
  EXPECT_EQ(r->flags, kCmdFlagFua);
  EXPECT_EQ(r->cookie, 0x1122u);
  EXPECT_EQ(r->offset, 4096u);
  EXPECT_EQ(r->length, 512u);
  ByteWriter bad;
  bad.u32(0xdeadbeef).zeros(24);
  EXPECT_EQ(decode_request(bad.data()).status().code(), EPROTO);
  EXPECT_FALSE(decode_request(std::span(w.data().data(), 10)));
}

TEST(Request, Valid) {
  EXPECT_EQ(check_request(req(kCmdRead, 0, 4096), limits()).error, 0u);
  EXPECT_EQ(check_request(req(kCmdWrite, (1 << 20) - 1, 1, kCmdFlagFua), limits()).error, 0u);
  EXPECT_EQ(check_request(req(kCmdFlush, 0, 0), limits()).error, 0u);
  EXPECT_EQ(check_request(req(kCmdWriteZeroes, 0, 1 << 20, kCmdFlagNoHole | kCmdFlagFastZero), limits()).error, 0u);
  EXPECT_EQ(check_request(req(kCmdCache, 0, 0), limits()).error, 0u);
}

TEST(Request, OutOfRange) {
  EXPECT_EQ(check_request(req(kCmdRead, 1 << 20, 1), limits()).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdWrite, (1 << 20) - 1, 2), limits()).error, kEnospc);
  EXPECT_EQ(check_request(req(kCmdRead, ~0ull, 2), limits()).error, kEinval);  // no wraparound
  EXPECT_EQ(check_request(req(kCmdTrim, 0, (1 << 20) + 1), limits()).error, kEinval);
}

TEST(Request, OverTheMaximumPayload) {
  EXPECT_EQ(check_request(req(kCmdRead, 0, 65537), limits()).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdWrite, 0, 65537), limits()).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdRead, 0, 65537, kCmdFlagDf), limits(kFlagSendDf)).error, kEoverflow);
  // Trim and zero have no payload: the limit does not apply.
  EXPECT_EQ(check_request(req(kCmdTrim, 0, 1 << 20), limits()).error, 0u);
}

TEST(Request, FlagsAndCommands) {
  EXPECT_EQ(check_request(req(99, 0, 1), limits()).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdRead, 0, 1, 1 << 9), limits()).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdRead, 0, 1, kCmdFlagDf), limits()).error, kEinval);  // DF not offered
  EXPECT_EQ(check_request(req(kCmdWrite, 0, 1, kCmdFlagNoHole), limits()).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdBlockStatus, 0, 1), limits()).error, kEinval);  // no context
  auto l = limits();
  l.base_allocation = true;
  EXPECT_EQ(check_request(req(kCmdBlockStatus, 0, 1, kCmdFlagReqOne), l).error, 0u);
  EXPECT_EQ(check_request(req(kCmdFlush, 1, 0), limits()).error, kEinval);
  EXPECT_EQ(check_request(req(kCmdRead, 0, 0), limits()).error, kEinval);
}

TEST(Request, ReadOnly) {
  auto l = limits(kFlagReadOnly);
  EXPECT_EQ(check_request(req(kCmdWrite, 0, 1), l).error, kEperm);
  EXPECT_EQ(check_request(req(kCmdTrim, 0, 1), l).error, kEperm);
  EXPECT_EQ(check_request(req(kCmdWriteZeroes, 0, 1), l).error, kEperm);
  EXPECT_EQ(check_request(req(kCmdRead, 0, 1), l).error, 0u);
}

TEST(Request, Alignment) {
  auto l = limits();
  l.min_block = 512;
  EXPECT_EQ(check_request(req(kCmdRead, 512, 1024), l).error, 0u);
  EXPECT_EQ(check_request(req(kCmdRead, 100, 512), l).error, kEinval);
}

TEST(Request, ErrorMapping) {
  EXPECT_EQ(nbd_error(Status::ok()), 0u);
  EXPECT_EQ(nbd_error(Status::error(EROFS, "")), kEperm);
  EXPECT_EQ(nbd_error(Status::error(EDQUOT, "")), kEnospc);
  EXPECT_EQ(nbd_error(Status::error(EFBIG, "")), kEnospc);
  EXPECT_EQ(nbd_error(Status::unsupported("")), kEnotsup);
  EXPECT_EQ(nbd_error(Status::error(EBADF, "")), kEio);
}
