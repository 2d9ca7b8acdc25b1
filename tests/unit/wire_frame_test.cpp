// The memsync wire protocol's frames and fixed messages (man/memsync-wire.7):
// byte layout, negotiation, and refusal of what the specification forbids.
#include <gtest/gtest.h>

#include "util/endian.hpp"
#include "wire/frame.hpp"

using namespace memsync;
using namespace memsync::wire;

namespace {

std::vector<std::byte> bytes_of(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(std::byte(b));
  return out;
}

TEST(WireFrame, HeaderLayoutMatchesTheSpecExample) {
  // READ of 4096 bytes at 8192, id 7: the header part of the man page example.
  std::array<std::byte, kHeaderSize> h{};
  encode_header(FrameHeader{kRead, 0, 7, 12}, h);
  EXPECT_EQ(std::vector<std::byte>(h.begin(), h.end()),
            bytes_of({0x4d, 0x53, 0x57, 0x31, 0x00, 0x02, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 12}));
  auto back = decode_header(h, kHelloLimit);
  ASSERT_TRUE(back) << back.status().message();
  EXPECT_EQ(back->type, kRead);
  EXPECT_EQ(back->id, 7u);
  EXPECT_EQ(back->length, 12u);
  EXPECT_FALSE(back->is_reply());
}

TEST(WireFrame, HeaderRefusesBadMagicAndLengthsBeforeAllocating) {
  std::array<std::byte, kHeaderSize> h{};
  encode_header(FrameHeader{kWrite | kReplyBit, kFlagError, 1, 5000}, h);
  auto big = decode_header(h, 4096);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.status().code(), EPROTO);
  auto ok = decode_header(h, 5000);
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->is_error());
  h[0] = std::byte{'N'};
  EXPECT_FALSE(decode_header(h, 1 << 20));
  EXPECT_FALSE(decode_header(std::span<const std::byte>(h.data(), 19), 1 << 20));
}

TEST(WireFrame, HelloRoundTripAndLimits) {
  Hello h;
  h.features = kFeatureLz4 | kFeatureTrim | (1ull << 40);
  h.max_payload = 1 << 20;
  h.max_inflight = 128;
  h.client_id = 0xfeedf00d12345678ull;
  h.name = "ram-dl on host-a";
  auto bytes = encode_hello(h);
  EXPECT_EQ(bytes.size(), 2u + 2 + 8 + 4 + 4 + 8 + 2 + h.name.size());
  auto back = decode_hello(bytes);
  ASSERT_TRUE(back) << back.status().message();
  EXPECT_EQ(back->features, h.features);
  EXPECT_EQ(back->max_payload, 1u << 20);
  EXPECT_EQ(back->name, h.name);
  EXPECT_EQ(back->client_id, h.client_id);
  // Truncated, trailing bytes, an oversized name, an empty version range.
  EXPECT_FALSE(decode_hello(std::span(bytes.data(), bytes.size() - 1)));
  bytes.push_back(std::byte{0});
  EXPECT_FALSE(decode_hello(bytes));
  Hello bad = h;
  bad.version_min = 2;
  bad.version_max = 1;
  EXPECT_FALSE(decode_hello(encode_hello(bad)));
  ByteWriter w;
  w.u16(1).u16(1).u64(0).u32(0).u32(0).u64(0).u16(300).zeros(300);
  EXPECT_FALSE(decode_hello(w.data()));
}

TEST(WireFrame, NegotiationTakesTheCommonGround) {
  Hello h;
  h.features = kFeatureLz4 | kFeatureMigration | (1ull << 63);  // one known, two not
  h.max_payload = 64 << 20;                                      // more than the protocol allows
  h.max_inflight = 0;                                            // "your default"
  ServerTerms t;
  t.size = 1 << 30;
  t.max_payload = 8 << 20;
  t.chunk_size = 65536;
  t.store_id = 0x0123456789abcdefull;
  auto rep = negotiate(h, t);
  ASSERT_TRUE(rep) << rep.status().message();
  EXPECT_EQ(rep->version, 1);
  EXPECT_EQ(rep->features, kFeatureLz4);  // never unknown or reserved bits
  EXPECT_EQ(rep->max_payload, 8u << 20);
  EXPECT_EQ(rep->max_inflight, kDefaultInflight);
  EXPECT_EQ(rep->size, 1u << 30);
  EXPECT_TRUE(check_hello_reply(h, *rep));
  auto back = decode_hello_reply(encode_hello_reply(*rep));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->chunk_size, 65536u);
  EXPECT_EQ(back->features, kFeatureLz4);
  EXPECT_EQ(back->store_id, 0x0123456789abcdefull);

  Hello future;
  future.version_min = future.version_max = 2;
  auto no = negotiate(future, t);
  ASSERT_FALSE(no);
  EXPECT_EQ(no.status().code(), EPROTONOSUPPORT);
}

TEST(WireFrame, ClientRefusesAServerThatOverreaches) {
  Hello h;
  h.features = kFeatureLz4;
  h.max_payload = 1 << 20;
  HelloReply r;
  r.features = kFeatureLz4 | kFeatureTrim;  // not offered
  r.max_payload = 1 << 20;
  EXPECT_FALSE(check_hello_reply(h, r));
  r.features = kFeatureLz4;
  r.max_payload = 2 << 20;  // more than asked
  EXPECT_FALSE(check_hello_reply(h, r));
  r.max_payload = 1 << 20;
  r.chunk_size = 3000;
  EXPECT_FALSE(check_hello_reply(h, r));
  r.chunk_size = 4096;
  r.version = 2;
  EXPECT_FALSE(check_hello_reply(h, r));
  r.version = 1;
  EXPECT_TRUE(check_hello_reply(h, r));
  auto bytes = encode_hello_reply(r);
  ASSERT_EQ(bytes.size(), 39u);
  bytes[30] = std::byte{2};  // read_only must be 0 or 1
  EXPECT_FALSE(decode_hello_reply(bytes));
}

TEST(WireFrame, ErrorRepliesCarryCodeAndMessage) {
  auto bytes = encode_error(ErrorReply{ENOSPC, "disk full"});
  auto e = decode_error(bytes);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, static_cast<uint32_t>(ENOSPC));
  EXPECT_EQ(e->message, "disk full");
  Status st = to_status(*e, "write at 4096");
  EXPECT_EQ(st.code(), ENOSPC);
  EXPECT_NE(st.message().find("disk full"), std::string::npos);
  // A long message is cut on the way out, never refused.
  auto long_one = encode_error(ErrorReply{EIO, std::string(5000, 'x')});
  EXPECT_EQ(decode_error(long_one)->message.size(), kMaxErrorMessage);
  EXPECT_FALSE(decode_error(encode_error(ErrorReply{0, "no code"})));
  EXPECT_FALSE(decode_error(std::span(bytes.data(), bytes.size() - 1)));
  EXPECT_EQ(to_status(ErrorReply{70000, ""}, "x").code(), EIO);  // unknown codes stay errors
}

TEST(WireFrame, RangesAreCheckedAgainstSizeAndLimit) {
  auto rg = decode_range(encode_range(Range{8192, 4096}));
  ASSERT_TRUE(rg);
  EXPECT_EQ(rg->offset, 8192u);
  EXPECT_TRUE(check_range(*rg, 1 << 20, 4096));
  EXPECT_EQ(check_range(Range{0, 0}, 1 << 20, 4096).code(), EINVAL);
  EXPECT_EQ(check_range(Range{0, 8192}, 1 << 20, 4096).code(), EINVAL);
  EXPECT_EQ(check_range(Range{(1 << 20) - 10, 11}, 1 << 20, 4096).code(), ERANGE);
  EXPECT_EQ(check_range(Range{~0ull, 1}, 1 << 20, 4096).code(), ERANGE);  // no overflow
  EXPECT_FALSE(decode_range(std::vector<std::byte>(11)));
}

}  // namespace
