// The NBD server engine spoken to byte by byte: handshake options, request
// validation, concurrency and bad input, as the NBD spec prescribes.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <sys/socket.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "../helpers/raw_nbd_client.hpp"
#include "backend/dir_store.hpp"
#include "backend/file_store.hpp"
#include "backend/mem_store.hpp"
#include "nbd/handshake.hpp"
#include "nbd/server.hpp"

using namespace memsync;
using namespace memsync::nbd;
using memsync::test::RawNbdClient;

namespace {

// A server serving `store` on one end of a socketpair, on its own thread.
class Harness {
 public:
  explicit Harness(std::shared_ptr<Store> store, ServerOptions opts = {}) : server_(std::move(store), opts) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    client_ = std::make_unique<RawNbdClient>(sv[0]);
    thread_ = std::jthread([this, fd = sv[1]] {
      Channel ch{UniqueFd(fd)};
      result_ = server_.serve(ch);
      done_ = true;
    });
  }
  ~Harness() {
    server_.stop();
    if (thread_.joinable()) thread_.join();  // before result_ goes away
  }
  RawNbdClient& c() { return *client_; }
  Status finish() {
    thread_.join();
    return result_;
  }
  NbdServer& server() { return server_; }

 private:
  NbdServer server_;
  std::unique_ptr<RawNbdClient> client_;
  std::jthread thread_;
  Status result_;
  std::atomic<bool> done_{false};
};

std::shared_ptr<Store> mem(uint64_t size = 1 << 20) { return *MemStore::create(size); }

std::span<const std::byte> bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

TEST(Handshake, GreetingAndGo) {
  Harness h(mem());
  uint64_t size = 0;
  uint16_t flags = 0;
  ASSERT_TRUE(h.c().handshake(false, false, &size, &flags));
  EXPECT_EQ(size, 1u << 20);
  EXPECT_TRUE(flags & kFlagHasFlags);
  EXPECT_TRUE(flags & kFlagSendFlush);
  EXPECT_TRUE(flags & kFlagCanMultiConn);
  EXPECT_FALSE(flags & kFlagReadOnly);
  EXPECT_FALSE(flags & kFlagSendDf);  // no structured replies were negotiated
}

TEST(Handshake, UnknownClientFlagsCloseTheConnection) {
  Harness h(mem());
  ASSERT_GE(h.c().read_greeting(), 0);
  h.c().send_client_flags(1u << 7);
  EXPECT_TRUE(h.c().closed());
  EXPECT_EQ(h.finish().code(), EPROTO);
}

TEST(Handshake, UnknownOptionIsUnsupportedAndStaysInSync) {
  Harness h(mem());
  ASSERT_GE(h.c().read_greeting(), 0);
  h.c().send_client_flags(kClientFixedNewstyle);
  h.c().send_option(4242, bytes("some option data"));
  auto r = h.c().read_opt_reply();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.option, 4242u);
  EXPECT_EQ(r.type, kRepErrUnsup);
  h.c().send_option(kOptList, {});
  auto list = h.c().read_until_final();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].type, kRepServer);
  EXPECT_EQ(list[1].type, kRepAck);
}

TEST(Handshake, OversizedOptionIsSkipped) {
  Harness h(mem());
  ASSERT_GE(h.c().read_greeting(), 0);
  h.c().send_client_flags(kClientFixedNewstyle);
  std::vector<std::byte> big(kMaxOptionLength + 1000);
  h.c().send_option(kOptInfo, big);
  EXPECT_EQ(h.c().read_opt_reply().type, kRepErrTooBig);
  h.c().send_option(kOptList, {});
  EXPECT_EQ(h.c().read_until_final().back().type, kRepAck);
}

TEST(Handshake, MalformedAndUnknownExports) {
  Harness h(mem());
  ASSERT_GE(h.c().read_greeting(), 0);
  h.c().send_client_flags(kClientFixedNewstyle);
  ByteWriter lying;  // name length larger than the data
  lying.u32(100).str("x").u16(0);
  h.c().send_option(kOptGo, lying.data());
  EXPECT_EQ(h.c().read_opt_reply().type, kRepErrInvalid);
  ByteWriter unknown;
  unknown.u32(4).str("nope").u16(0);
  h.c().send_option(kOptInfo, unknown.data());
  EXPECT_EQ(h.c().read_opt_reply().type, kRepErrUnknown);
  h.c().send_option(kOptList, bytes("x"));
  EXPECT_EQ(h.c().read_opt_reply().type, kRepErrInvalid);
  h.c().send_option(kOptStartTls, {});
  EXPECT_EQ(h.c().read_opt_reply().type, kRepErrPolicy);
  ByteWriter meta;
  meta.u32(0).u32(1).u32(15).str("base:allocation");
  h.c().send_option(kOptSetMetaContext, meta.data());  // before STRUCTURED_REPLY
  EXPECT_EQ(h.c().read_opt_reply().type, kRepErrInvalid);
  h.c().send_option(kOptAbort, {});
  EXPECT_EQ(h.c().read_opt_reply().type, kRepAck);
  EXPECT_TRUE(h.finish().is_ok());
}

TEST(Handshake, NamedExportAndInfo) {
  ServerOptions o;
  o.export_config.name = "disk";
  o.export_config.description = "a test disk";
  Harness h(mem(), o);
  ASSERT_GE(h.c().read_greeting(), 0);
  h.c().send_client_flags(kClientFixedNewstyle);
  ByteWriter info;
  info.u32(4).str("disk").u16(2).u16(kInfoName).u16(kInfoDescription);
  h.c().send_option(kOptInfo, info.data());
  auto rs = h.c().read_until_final();
  std::set<uint16_t> seen;
  for (auto& r : rs)
    if (r.type == kRepInfo) seen.insert(load_be16(r.data.data()));
  EXPECT_TRUE(seen.count(kInfoExport) && seen.count(kInfoName) && seen.count(kInfoDescription) &&
              seen.count(kInfoBlockSize));
  EXPECT_EQ(rs.back().type, kRepAck);
}

TEST(Handshake, TlsRequiredRefusesPlainOptions) {
  ServerOptions o;
  o.export_config.tls = TlsMode::Require;
  Harness h(mem(), o);
  ASSERT_GE(h.c().read_greeting(), 0);
  h.c().send_client_flags(kClientFixedNewstyle);
  h.c().send_option(kOptList, {});
  EXPECT_EQ(h.c().read_opt_reply().type, kRepErrTlsReqd);
  h.c().send_option(kOptExportName, {});  // cannot be refused politely: hard close
  EXPECT_TRUE(h.c().closed());
}

TEST(Transmission, WriteReadFlushDisc) {
  Harness h(mem());
  ASSERT_TRUE(h.c().handshake());
  std::vector<std::byte> data(8192, std::byte{0x5a});
  h.c().send_request(kCmdWrite, 4096, 8192, 1, kCmdFlagFua, data);
  auto w = h.c().read_simple_reply();
  ASSERT_TRUE(w.ok);
  EXPECT_EQ(w.error, 0u);
  EXPECT_EQ(w.cookie, 1u);
  h.c().send_request(kCmdRead, 4096, 8192, 2);
  auto r = h.c().read_simple_reply();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.error, 0u);
  EXPECT_EQ(h.c().recv(8192), data);
  h.c().send_request(kCmdFlush, 0, 0, 3);
  EXPECT_EQ(h.c().read_simple_reply().error, 0u);
  h.c().send_request(kCmdDisc, 0, 0, 4);
  EXPECT_TRUE(h.c().closed());
  EXPECT_TRUE(h.finish().is_ok());
}

TEST(Transmission, BadRequestsGetErrorsAndTheConnectionGoesOn) {
  ServerOptions o;
  o.export_config.max_payload = 65536;
  Harness h(mem(), o);
  ASSERT_TRUE(h.c().handshake());
  h.c().send_request(77, 0, 10, 1);  // unknown command
  EXPECT_EQ(h.c().read_simple_reply().error, kEinval);
  h.c().send_request(kCmdRead, (1 << 20) - 1, 2, 2);  // beyond the end
  EXPECT_EQ(h.c().read_simple_reply().error, kEinval);
  std::vector<std::byte> big(65537);
  h.c().send_request(kCmdWrite, 0, 65537, 3, 0, big);  // over the maximum: payload skipped
  EXPECT_EQ(h.c().read_simple_reply().error, kEinval);
  std::vector<std::byte> two(2);
  h.c().send_request(kCmdWrite, (1 << 20) - 1, 2, 4, 0, two);  // write past the end
  EXPECT_EQ(h.c().read_simple_reply().error, kEnospc);
  h.c().send_request(kCmdRead, 0, 16, 5);  // still in sync
  auto r = h.c().read_simple_reply();
  EXPECT_EQ(r.error, 0u);
  EXPECT_EQ(r.cookie, 5u);
  EXPECT_EQ(h.c().recv(16).size(), 16u);
}

TEST(Transmission, ReadOnlyExportRefusesWrites) {
  ServerOptions o;
  o.export_config.read_only = true;
  Harness h(mem(), o);
  uint16_t flags = 0;
  ASSERT_TRUE(h.c().handshake(false, false, nullptr, &flags));
  EXPECT_TRUE(flags & kFlagReadOnly);
  std::vector<std::byte> d(512);
  h.c().send_request(kCmdWrite, 0, 512, 9, 0, d);
  EXPECT_EQ(h.c().read_simple_reply().error, kEperm);
}

TEST(Transmission, BadMagicDisconnects) {
  Harness h(mem());
  ASSERT_TRUE(h.c().handshake());
  ByteWriter junk;
  junk.u32(0x12345678).zeros(24);
  h.c().send(junk.data());
  EXPECT_TRUE(h.c().closed());
  EXPECT_EQ(h.finish().code(), EPROTO);
}

TEST(Transmission, ClientVanishingMidWriteEndsOnlyThatConnection) {
  Harness h(mem());
  ASSERT_TRUE(h.c().handshake());
  std::vector<std::byte> half(100);
  h.c().send_request(kCmdWrite, 0, 4096, 1, 0, half);
  ::shutdown(h.c().fd(), SHUT_WR);
  Status st = h.finish();
  EXPECT_EQ(st.code(), EPROTO);  // logged as the client's fault, no crash, no hang
}

TEST(Transmission, PipelinedRequestsAllAnswered) {
  ServerOptions o;
  o.transmission.threads = 8;
  Harness h(mem(16 << 20), o);
  ASSERT_TRUE(h.c().handshake(true));
  constexpr int kN = 200;
  std::jthread sender([&] {
    std::vector<std::byte> d(65536, std::byte{7});
    for (int i = 0; i < kN; ++i) {
      if (i % 2) h.c().send_request(kCmdWrite, static_cast<uint64_t>(i) * 65536, 65536, i, 0, d);
      else h.c().send_request(kCmdRead, static_cast<uint64_t>(i) * 65536, 65536, i);
    }
  });
  std::set<uint64_t> cookies;
  for (int i = 0; i < kN; ++i) {
    auto c = h.c().read_any_reply();
    ASSERT_TRUE(c.ok) << "reply " << i;
    EXPECT_TRUE(c.flags & kReplyFlagDone);
    cookies.insert(c.cookie);
  }
  EXPECT_EQ(cookies.size(), static_cast<size_t>(kN));
}

TEST(Transmission, StructuredReadSendsHolesAndBlockStatus) {
  auto path = std::filesystem::temp_directory_path() / ("memsync-holes-" + std::to_string(::getpid()));
  DirStoreOptions o;  // a dir: store knows its holes cheaply (missing chunk files)
  o.size = 4 << 20;
  o.chunk = 65536;
  auto store = *DirStore::open(path.string(), o);
  std::vector<std::byte> d(65536, std::byte{1});
  ASSERT_TRUE(store->write_at(d, 1 << 20));
  Harness h(store);
  ASSERT_TRUE(h.c().handshake(true, true));
  h.c().send_request(kCmdRead, 0, 2 << 20, 1);
  uint64_t covered = 0;
  bool saw_hole = false, done = false;
  while (!done) {
    auto c = h.c().read_any_reply();
    ASSERT_TRUE(c.ok);
    done = c.flags & kReplyFlagDone;
    if (c.type == kReplyTypeOffsetHole) {
      saw_hole = true;
      covered += load_be32(c.payload.data() + 8);
    } else {
      ASSERT_EQ(c.type, kReplyTypeOffsetData);
      covered += c.payload.size() - 8;
    }
  }
  EXPECT_TRUE(saw_hole);
  EXPECT_EQ(covered, 2u << 20);
  h.c().send_request(kCmdBlockStatus, 0, 4 << 20, 2);
  auto bs = h.c().read_any_reply();
  ASSERT_TRUE(bs.ok);
  EXPECT_EQ(bs.type, kReplyTypeBlockStatus);
  ASSERT_GE(bs.payload.size(), 4u + 8u * 3);
  EXPECT_EQ(load_be32(bs.payload.data()), kBaseAllocationId);
  EXPECT_EQ(load_be32(bs.payload.data() + 8) & kStateHole, kStateHole);  // [0, 1M) is a hole
  std::filesystem::remove_all(path);
}

TEST(Transmission, FileWritesLandByteForByte) {
  // Small writes arrive with their header in the read buffer; large ones are
  // spliced from the socket into the file. Both must land exactly.
  auto path = std::filesystem::temp_directory_path() / ("memsync-splice-" + std::to_string(::getpid()));
  auto store = *FileStore::open(path.string(), FileStoreOptions{false, 8 << 20});
  Harness h(store);
  ASSERT_TRUE(h.c().handshake());
  std::vector<std::byte> big(3 << 20), small(100);
  for (size_t i = 0; i < big.size(); ++i) big[i] = std::byte(i * 7 % 251);
  for (size_t i = 0; i < small.size(); ++i) small[i] = std::byte(i + 1);
  h.c().send_request(kCmdWrite, 12345, static_cast<uint32_t>(big.size()), 1, 0, big);
  h.c().send_request(kCmdWrite, 7, static_cast<uint32_t>(small.size()), 2, kCmdFlagFua, small);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(h.c().read_simple_reply().error, 0u);
  std::vector<std::byte> back(big.size());
  ASSERT_TRUE(store->read_at(back, 12345));
  EXPECT_EQ(back, big);
  back.resize(small.size());
  ASSERT_TRUE(store->read_at(back, 7));
  EXPECT_EQ(back, small);
  std::filesystem::remove(path);
}

TEST(Transmission, FileShrunkUnderTheExportIsAnErrorNotACrash) {
  // WRITE payloads land in a shared mapping of the file; a range past a
  // shrunken end must not SIGBUS: the write goes through the file instead
  // (growing it back), and reads past the end answer zeros.
  auto path = std::filesystem::temp_directory_path() / ("memsync-shrink-" + std::to_string(::getpid()));
  auto store = *FileStore::open(path.string(), FileStoreOptions{false, 8 << 20});
  Harness h(store);
  ASSERT_TRUE(h.c().handshake());
  std::vector<std::byte> data(1 << 20, std::byte{0x42});
  h.c().send_request(kCmdWrite, 0, static_cast<uint32_t>(data.size()), 1, 0, data);
  EXPECT_EQ(h.c().read_simple_reply().error, 0u);
  ASSERT_EQ(::truncate(path.c_str(), 1 << 20), 0);
  h.c().send_request(kCmdRead, 4 << 20, 4096, 2);
  auto r = h.c().read_simple_reply();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.error, 0u);
  EXPECT_EQ(h.c().recv(4096), std::vector<std::byte>(4096));
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte(i % 253);
  h.c().send_request(kCmdWrite, 4 << 20, static_cast<uint32_t>(data.size()), 3, 0, data);
  EXPECT_EQ(h.c().read_simple_reply().error, 0u);
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE(store->read_at(back, 4 << 20));
  EXPECT_EQ(back, data);
  EXPECT_EQ(std::filesystem::file_size(path), 5u << 20);
  std::filesystem::remove(path);
}

TEST(Transmission, FailedFileWriteKeepsTheStreamInSync) {
  // The file refuses the write (RLIMIT_FSIZE stands in for a full disk):
  // the client gets an error for that request, and the payload is skipped
  // exactly, so the next request is read from the right place.
  auto path = std::filesystem::temp_directory_path() / ("memsync-efbig-" + std::to_string(::getpid()));
  auto store = *FileStore::open(path.string(), FileStoreOptions{false, 8 << 20});
  Harness h(store);
  ASSERT_TRUE(h.c().handshake());
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 1 << 20;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::vector<std::byte> data(3 << 20, std::byte{0x77});
  h.c().send_request(kCmdWrite, 2 << 20, static_cast<uint32_t>(data.size()), 1, 0, data);
  auto w = h.c().read_simple_reply();
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_TRUE(w.ok);
  EXPECT_NE(w.error, 0u);
  h.c().send_request(kCmdRead, 0, 4096, 2);
  auto r = h.c().read_simple_reply();
  ASSERT_TRUE(r.ok) << "the stream lost its place after the failed write";
  EXPECT_EQ(r.cookie, 2u);
  EXPECT_EQ(r.error, 0u);
  EXPECT_EQ(h.c().recv(4096).size(), 4096u);
  std::filesystem::remove(path);
}

TEST(Transmission, BurstsOfSmallRequestsAreBatchedCorrectly) {
  // 64 4K writes in one burst, then 64 reads in another: workers take several buffered
  // requests at once and answer them with one write. Every reply must come
  // once, with its own cookie, and every read must return what was written.
  for (int kind = 0; kind < 2; ++kind) {
    auto path = std::filesystem::temp_directory_path() / ("memsync-batch-" + std::to_string(::getpid()));
    std::shared_ptr<Store> store =
        kind == 0 ? mem(1 << 20) : std::shared_ptr<Store>(*FileStore::open(path.string(), FileStoreOptions{false, 1 << 20}));
    Harness h(store);
    ASSERT_TRUE(h.c().handshake(kind == 1));
    constexpr int kN = 64;
    std::set<uint64_t> cookies;
    for (int phase = 0; phase < 2; ++phase) {  // all writes, then all reads
      ByteWriter burst;
      for (int i = 0; i < kN; ++i) {
        if (phase == 0) {
          std::vector<std::byte> d(4096, std::byte(i + 1));
          burst.u32(kRequestMagic).u16(0).u16(kCmdWrite).u64(i).u64(static_cast<uint64_t>(i) * 4096).u32(4096).bytes(d);
        } else {
          burst.u32(kRequestMagic).u16(0).u16(kCmdRead).u64(1000 + i).u64(static_cast<uint64_t>(i) * 4096).u32(4096);
        }
      }
      std::jthread sender([&] { h.c().send(burst.data()); });
      for (int i = 0; i < kN; ++i) {
        auto r = h.c().read_any_reply();
        ASSERT_TRUE(r.ok) << "reply " << i;
        EXPECT_TRUE(cookies.insert(r.cookie).second) << "duplicate reply " << r.cookie;
        if (r.cookie < 1000) continue;
        std::vector<std::byte> data;
        if (r.type == 0xffff) {  // simple reply: the data follows
          EXPECT_EQ(load_be32(r.payload.data()), 0u);
          data = h.c().recv(4096);
        } else {
          ASSERT_EQ(r.type, kReplyTypeOffsetData);
          data.assign(r.payload.begin() + 8, r.payload.end());
        }
        EXPECT_EQ(data, std::vector<std::byte>(4096, std::byte((r.cookie - 1000) + 1))) << "read " << r.cookie;
      }
    }
    EXPECT_EQ(cookies.size(), static_cast<size_t>(2 * kN));
    std::vector<std::byte> back(4096);
    for (int i = 0; i < kN; ++i) {
      ASSERT_TRUE(store->read_at(back, static_cast<uint64_t>(i) * 4096));
      EXPECT_EQ(back, std::vector<std::byte>(4096, std::byte(i + 1))) << "block " << i;
    }
    std::filesystem::remove(path);
  }
}

// A store whose reads take a while, to stop the server in the middle of one.
class SlowStore : public StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Status read_at(std::span<std::byte> b, uint64_t o) override {
    started = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return StoreWrapper::read_at(b, o);
  }
  std::atomic<bool> started{false};
};

// A store like one across a network: no request is quick, and each read
// waits until `want` reads run at once, as they would in one round trip.
class RoundTripStore : public StoreWrapper {
 public:
  RoundTripStore(std::shared_ptr<Store> inner, int want) : StoreWrapper(std::move(inner)), want_(want) {}
  bool quick(uint64_t, uint64_t) override { return false; }
  Status read_at(std::span<std::byte> b, uint64_t o) override {
    std::unique_lock lock(mu_);
    ++running_;
    cv_.notify_all();
    bool together = cv_.wait_for(lock, std::chrono::seconds(2), [&] { return running_ >= want_; });
    lock.unlock();
    if (!together) return Status::error(EIO, "the reads ran one after another");
    return StoreWrapper::read_at(b, o);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int running_ = 0;
  const int want_;
};

TEST(Transmission, RequestsThatWaitOnTheNetworkRunSideBySide) {
  // Four reads arrive in one segment. A worker may answer buffered quick
  // requests in turn with one write; these each wait a round trip, so each
  // must get a worker of its own, or the last would wait four.
  constexpr int kN = 4;
  ServerOptions o;
  o.transmission.threads = 8;
  Harness h(std::make_shared<RoundTripStore>(mem(), kN), o);
  ASSERT_TRUE(h.c().handshake());
  ByteWriter w;
  for (uint64_t i = 0; i < kN; ++i) w.u32(kRequestMagic).u16(0).u16(kCmdRead).u64(i).u64(i * 4096).u32(4096);
  ASSERT_TRUE(h.c().send(w.data()));
  std::set<uint64_t> cookies;
  for (int i = 0; i < kN; ++i) {
    auto r = h.c().read_simple_reply();
    ASSERT_TRUE(r.ok);
    ASSERT_EQ(r.error, 0u) << "cookie " << r.cookie;
    EXPECT_EQ(h.c().recv(4096).size(), 4096u);
    cookies.insert(r.cookie);
  }
  EXPECT_EQ(cookies.size(), static_cast<size_t>(kN));
}

TEST(Transmission, StopWhileASlowRequestRunsStillAnswersIt) {
  auto slow = std::make_shared<SlowStore>(mem());
  Harness h(slow);
  ASSERT_TRUE(h.c().handshake());
  h.c().send_request(kCmdRead, 0, 4096, 42);
  while (!slow->started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  h.server().stop();  // mid-request
  auto r = h.c().read_simple_reply();
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.cookie, 42u);
  EXPECT_EQ(r.error, 0u);
  EXPECT_EQ(h.c().recv(4096).size(), 4096u);
  EXPECT_TRUE(h.c().closed());
  EXPECT_TRUE(h.finish().is_ok());
}

TEST(Transmission, StopFinishesInFlightWork) {
  Harness h(mem());
  ASSERT_TRUE(h.c().handshake());
  h.c().send_request(kCmdRead, 0, 4096, 1);
  auto r = h.c().read_simple_reply();
  EXPECT_EQ(r.error, 0u);
  EXPECT_EQ(h.c().recv(4096).size(), 4096u);
  h.server().stop();
  EXPECT_TRUE(h.c().closed());
  EXPECT_TRUE(h.finish().is_ok());
}

}  // namespace
