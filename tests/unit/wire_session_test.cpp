// The wire protocol end to end: RemoteStore (client) against WireServer on
// a socketpair, both real, plus a raw client for what a well-behaved client
// never sends.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include "../helpers/socket_pair.hpp"
#include "backend/file_store.hpp"
#include "backend/mem_store.hpp"
#include "util/endian.hpp"
#include "wire/framing.hpp"
#include "wire/remote_store.hpp"
#include "wire/server.hpp"

using namespace memsync;
using namespace memsync::wire;

namespace {

using test::pair_of_sockets;

// A WireServer serving `store` on one end of a socketpair, on a thread.
struct Served {
  explicit Served(std::shared_ptr<Store> store, WireServerOptions opts = {}) : server(std::move(store), opts) {
    auto [a, b] = pair_of_sockets();
    client_end = std::move(a);
    thread = std::jthread([this, fd = std::move(b)]() mutable {
      Channel ch(std::move(fd));
      result = server.serve(ch);
    });
  }
  ~Served() {
    server.stop();
    if (thread.joinable()) thread.join();
  }
  std::shared_ptr<RemoteStore> connect(RemoteOptions o = {}) {
    auto r = RemoteStore::open(std::make_unique<Channel>(std::move(client_end)), o, "test");
    EXPECT_TRUE(r) << r.status().message();
    return r ? *r : nullptr;
  }
  WireServer server;
  UniqueFd client_end;
  std::jthread thread;
  Status result;
};

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = std::byte(rng() & 0xff);
  return v;
}

TEST(WireSession, SyncGoesToTheServerOnlyAfterWrites) {
  auto mem = *MemStore::create(1 << 20);
  Served s(mem);
  auto r = s.connect();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->sync());  // nothing written yet: ok without a round trip
  std::vector<std::byte> buf(4096, std::byte{1});
  ASSERT_TRUE(r->write_at(buf, 0));
  s.server.stop();  // the server is gone: the owed sync must fail, not pass
  s.thread.join();
  EXPECT_EQ(r->sync().code(), ECONNRESET);
  EXPECT_EQ(r->sync().code(), ECONNRESET);  // still owed
}

TEST(WireSession, ReadWriteSyncSizeAcrossPayloadLimit) {
  auto mem = *MemStore::create(8 << 20);
  Served s(mem);
  RemoteOptions o;
  o.max_payload = 64 * 1024;  // forces splitting
  auto r = s.connect(o);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->size(), 8u << 20);
  EXPECT_EQ(r->terms().max_payload, 64u * 1024);
  auto data = random_bytes(300 * 1024 + 7, 1);
  ASSERT_TRUE(r->write_at(data, 12345));
  ASSERT_TRUE(r->sync());
  std::vector<std::byte> back(data.size()), direct(data.size());
  ASSERT_TRUE(r->read_at(back, 12345));
  EXPECT_EQ(back, data);
  ASSERT_TRUE(mem->read_at(direct, 12345));
  EXPECT_EQ(direct, data);  // it really is in the server's store
}

TEST(WireSession, CompressibleDataTravelsCompressedAndArrivesIntact) {
  auto mem = *MemStore::create(4 << 20);
  Served s(mem);
  auto r = s.connect();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->terms().features & kFeatureLz4);
  std::vector<std::byte> data(1 << 20);
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte((i / 4096) & 0xff);
  ASSERT_TRUE(r->write_at(data, 0));
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE(r->read_at(back, 0));
  EXPECT_EQ(back, data);
  RemoteOptions plain;
  plain.features = 0;
  Served s2(mem);
  auto r2 = s2.connect(plain);
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->terms().features, 0u);
  std::vector<std::byte> back2(data.size());
  ASSERT_TRUE(r2->read_at(back2, 0));
  EXPECT_EQ(back2, data);
  EXPECT_FALSE(r2->can_trim());
}

// A file store is served by sendfile when a payload is not compressed
// (always without LZ4, and while the compression gate is shut on random
// data), and read_into puts replies straight into a destination file
// (splice) or memory. Every combination must deliver the same bytes.
TEST(WireSession, FilesGoOutBySendfileAndComeInToFiles) {
  namespace fs = std::filesystem;
  auto dir = fs::temp_directory_path() / ("memsync-unit-wire-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const size_t size = 4 << 20;
  auto served = *FileStore::open((dir / "served.img").string(), FileStoreOptions{false, size});
  auto data = random_bytes(size, 9);
  for (size_t i = 0; i < size / 2; ++i) data[i] = std::byte((i / 4096) & 0xff);  // first half compresses
  ASSERT_TRUE(served->write_at(data, 0));
  for (uint64_t features : {uint64_t{0}, uint64_t{kFeatureLz4}}) {
    SCOPED_TRACE(features ? "lz4" : "no compression");
    Served s(served);
    RemoteOptions o;
    o.features = features;
    o.max_payload = 256 * 1024;  // several frames per read
    auto r = s.connect(o);
    ASSERT_TRUE(r);
    std::vector<std::byte> back(size);
    ASSERT_TRUE(r->read_at(back, 0));
    EXPECT_TRUE(back == data);
    auto sink = *FileStore::open((dir / "sink.img").string(), FileStoreOptions{false, size});
    Store::DirectRange into;
    ASSERT_TRUE(sink->direct_range(0, size, Store::Access::kWrite, into));
    into.write_memory = nullptr;  // as the managed mount does: by splice,
    std::mutex turns;             // taking turns with other fetches
    into.write_lock = &turns;
    ASSERT_TRUE(r->read_into(into, 0, size));
    std::vector<std::byte> landed(size);
    ASSERT_TRUE(sink->read_at(landed, 0));
    EXPECT_TRUE(landed == data);
    // An odd range, through a memory destination.
    std::vector<std::byte> part(300001);
    Store::DirectRange to_memory;
    to_memory.memory = part.data();
    ASSERT_TRUE(r->read_into(to_memory, 1234567, part.size()));
    EXPECT_TRUE(std::equal(part.begin(), part.end(), data.begin() + 1234567));
  }
  fs::remove_all(dir);
}

// A served file that shrinks under the server: reads past its new end
// answer zeros (as FileStore::read_at does), by sendfile too, and the
// session goes on.
TEST(WireSession, AFileThatShrankReadsAsZerosAndTheSessionGoesOn) {
  namespace fs = std::filesystem;
  auto path = fs::temp_directory_path() / ("memsync-unit-wire-shrink-" + std::to_string(::getpid()));
  auto served = *FileStore::open(path.string(), FileStoreOptions{false, 4 << 20});
  auto data = random_bytes(4 << 20, 10);
  ASSERT_TRUE(served->write_at(data, 0));
  Served s(served);
  RemoteOptions o;
  o.features = 0;  // no compression: every read goes out by sendfile
  auto r = s.connect(o);
  ASSERT_TRUE(r);
  ASSERT_EQ(::truncate(path.c_str(), 3 << 20), 0);
  std::vector<std::byte> back(2 << 20);
  ASSERT_TRUE(r->read_at(back, 2 << 20));  // half before the new end, half after
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + (1 << 20), data.begin() + (2 << 20)));
  EXPECT_TRUE(std::all_of(back.begin() + (1 << 20), back.end(), [](std::byte b) { return b == std::byte{0}; }));
  std::vector<std::byte> again(4096);
  ASSERT_TRUE(r->read_at(again, 0));
  EXPECT_TRUE(std::equal(again.begin(), again.end(), data.begin()));
  fs::remove(path);
}

TEST(WireSession, ErrorsComeBackAsStatusesAndTheSessionGoesOn) {
  auto mem = *MemStore::create(1 << 20);
  Served s(mem);
  auto r = s.connect();
  ASSERT_TRUE(r);
  std::vector<std::byte> buf(4096);
  Status st = r->read_at(buf, (1 << 20) - 100);
  EXPECT_EQ(st.code(), ERANGE) << st.message();
  EXPECT_NE(st.message().find("beyond the end"), std::string::npos) << st.message();
  EXPECT_EQ(r->write_at(buf, 1 << 20).code(), ERANGE);
  ASSERT_TRUE(r->read_at(buf, 0));  // still usable
  auto ones = std::vector<std::byte>(8192, std::byte{1});
  ASSERT_TRUE(r->write_at(ones, 4096));
  ASSERT_TRUE(r->write_zeroes(4096, 4096, true));
  ASSERT_TRUE(r->trim(8192, 4096));
  std::vector<std::byte> back(8192);
  ASSERT_TRUE(r->read_at(back, 4096));
  EXPECT_EQ(back, std::vector<std::byte>(8192));
}

TEST(WireSession, ManyThreadsShareOneConnection) {
  auto mem = *MemStore::create(16 << 20);
  Served s(mem);
  RemoteOptions o;
  o.max_inflight = 4;  // callers must queue for slots
  auto r = s.connect(o);
  ASSERT_TRUE(r);
  std::vector<std::jthread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      uint64_t base = static_cast<uint64_t>(t) * (2 << 20);
      for (int i = 0; i < 50; ++i) {
        auto data = random_bytes(4096 * (1 + i % 8), static_cast<uint32_t>(t * 1000 + i));
        uint64_t at = base + static_cast<uint64_t>(i % 16) * 65536;
        std::vector<std::byte> back(data.size());
        if (!r->write_at(data, at) || !r->read_at(back, at) || back != data) ++failures;
      }
    });
  }
  threads.clear();
  EXPECT_EQ(failures.load(), 0);
}

TEST(WireSession, ALostConnectionFailsCallsInsteadOfHanging) {
  auto mem = *MemStore::create(1 << 20);
  Served s(mem);
  auto r = s.connect();
  ASSERT_TRUE(r);
  s.server.stop();
  s.thread.join();
  std::vector<std::byte> buf(4096);
  Status st = r->read_at(buf, 0);
  EXPECT_EQ(st.code(), ECONNRESET) << st.message();
  EXPECT_EQ(r->write_at(buf, 0).code(), ECONNRESET);
  EXPECT_EQ(r->sync().code(), ECONNRESET);  // the failed write may have landed in part: owed
}

// A raw client for frames RemoteStore never sends.
struct Raw {
  explicit Raw(Served& s) : ch(std::move(s.client_end)) {}
  Status hello() {
    Hello h;
    auto body = encode_hello(h);
    MEMSYNC_TRY(send_frame(ch, FrameHeader{kHello, 0, 0, 0}, {body}));
    auto rep = read_header(ch, kHelloLimit);
    if (!rep) return rep.status();
    std::vector<std::byte> p(rep->length);
    return ch.read_exact(p);
  }
  // Sends a request, returns the reply's error code (0 for success).
  Result<uint32_t> request(uint16_t type, uint16_t flags, std::span<const std::byte> payload) {
    MEMSYNC_TRY(send_frame(ch, FrameHeader{type, flags, 99, 0}, {payload}));
    auto h = read_header(ch, 1 << 20);
    if (!h) return h.status();
    std::vector<std::byte> p(h->length);
    MEMSYNC_TRY(ch.read_exact(p));
    if (h->id != 99 || h->type != (type | kReplyBit)) return Status::error(EPROTO, "wrong reply");
    if (!h->is_error()) return 0u;
    auto e = decode_error(p);
    if (!e) return e.status();
    return e->code;
  }
  Channel ch;
};

TEST(WireSession, UnknownTypesAndFlagsAreRefusedWithoutLosingSync) {
  Served s(*MemStore::create(1 << 20));
  Raw c(s);
  ASSERT_TRUE(c.hello());
  std::vector<std::byte> junk(100, std::byte{7});
  EXPECT_EQ(*c.request(0x0010, 0, junk), static_cast<uint32_t>(EOPNOTSUPP));  // reserved: migration
  EXPECT_EQ(*c.request(0x7abc, 0, junk), static_cast<uint32_t>(EOPNOTSUPP));
  auto rg = encode_range(Range{0, 4096});
  EXPECT_EQ(*c.request(kRead, 0x0100, rg), static_cast<uint32_t>(EINVAL));  // unknown flag
  EXPECT_EQ(*c.request(kRead, 0, junk), static_cast<uint32_t>(EINVAL));     // wrong payload size
  ByteWriter w;
  w.u64(0);
  w.u32(4096).zeros(10);  // claims 4096 raw bytes, carries garbage
  EXPECT_EQ(*c.request(kWrite, kFlagCompressed, w.data()), static_cast<uint32_t>(EINVAL));
  EXPECT_EQ(*c.request(kSize, 0, {}), 0u);  // and the session is still in step
}

TEST(WireSession, ProtocolViolationsEndTheSession) {
  {
    Served s(*MemStore::create(1 << 20));
    Raw c(s);
    auto rg = encode_range(Range{0, 4096});
    ASSERT_TRUE(send_frame(c.ch, FrameHeader{kRead, 0, 1, 0}, {rg}));  // no HELLO first
    s.thread.join();
    EXPECT_EQ(s.result.code(), EPROTO);
  }
  {
    Served s(*MemStore::create(1 << 20));
    Raw c(s);
    ASSERT_TRUE(c.hello());
    std::array<std::byte, kHeaderSize> h{};
    encode_header(FrameHeader{kWrite, 0, 1, kDefaultPayload + kFrameSlack + 1}, h);  // too long: never read
    ASSERT_TRUE(c.ch.write({std::span<const std::byte>(h)}));
    s.thread.join();
    EXPECT_EQ(s.result.code(), EPROTO) << s.result.message();
  }
  {
    Served s(*MemStore::create(1 << 20));
    Raw c(s);
    Hello future;
    future.version_min = future.version_max = 9;
    auto body = encode_hello(future);
    ASSERT_TRUE(send_frame(c.ch, FrameHeader{kHello, 0, 0, 0}, {body}));
    auto h = read_header(c.ch, kHelloLimit);
    ASSERT_TRUE(h);
    EXPECT_TRUE(h->is_error());
    s.thread.join();
    EXPECT_EQ(s.result.code(), EPROTONOSUPPORT);
  }
}

}  // namespace
