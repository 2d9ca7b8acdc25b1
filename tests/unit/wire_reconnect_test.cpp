// RemoteStore through lost connections, outages, a restarted (emptied)
// server and TLS: real WireServers, connections cut under load.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "../helpers/socket_pair.hpp"
#include "backend/mem_store.hpp"
#include "net/endpoint.hpp"
#include "wire/remote_store.hpp"
#include "wire/server.hpp"

using namespace memsync;
using namespace memsync::wire;
using namespace std::chrono_literals;

namespace {

// Dials by making a socketpair and handing one end to `server`. Keeps a
// duplicate of the latest client end so the test can cut it, and can
// refuse to dial (an outage).
struct Line {
  std::atomic<WireServer*> server;
  std::atomic<bool> down{false};
  std::atomic<int> dials{0};
  std::mutex mu;
  UniqueFd last;  // guarded by mu

  explicit Line(WireServer& s) : server(&s) {}
  Dialer dialer() {
    return [this]() -> Result<Connection> {
      ++dials;
      if (down) return Status::error(ECONNREFUSED, "line down");
      auto [a, b] = test::pair_of_sockets();
      server.load()->adopt(std::move(b));
      {
        std::lock_guard lock(mu);
        last = UniqueFd(::dup(a.get()));
      }
      return Connection{nullptr, std::make_unique<Channel>(std::move(a))};
    };
  }
  void cut() {
    std::lock_guard lock(mu);
    if (last.valid()) ::shutdown(last.get(), SHUT_RDWR);
  }
};

std::vector<std::byte> pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = std::byte(rng() & 0xff);
  return v;
}

TEST(WireReconnect, CutsUnderLoadLoseNothing) {
  auto mem = *MemStore::create(16 << 20);
  WireServer server(mem, {});
  Line line(server);
  RemoteOptions o;
  o.max_payload = 64 * 1024;
  o.max_inflight = 8;
  auto r = RemoteStore::open(line.dialer(), o, "cut-test");
  ASSERT_TRUE(r) << r.status().message();
  auto store = *r;

  // Four writers, each owning a quarter, write then read back their blocks
  // while the connection is cut again and again.
  constexpr size_t kQuarter = 4 << 20, kBlock = 96 * 1024;
  std::atomic<bool> failed{false};
  std::vector<std::jthread> writers;
  for (uint32_t t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      for (size_t off = 0; off + kBlock <= kQuarter && !failed; off += kBlock) {
        auto data = pattern(kBlock, static_cast<uint32_t>(t * 1000 + off / kBlock));
        uint64_t at = t * kQuarter + off;
        Status st = store->write_at(data, at);
        std::vector<std::byte> back(kBlock);
        if (st) st = store->read_at(back, at);
        if (!st || back != data) {
          ADD_FAILURE() << "thread " << t << " at " << at << ": " << (st ? "data differs" : st.message());
          failed = true;
        }
      }
    });
  }
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(30ms);
    line.cut();
  }
  writers.clear();
  EXPECT_FALSE(failed);
  EXPECT_GE(line.dials.load(), 2);  // it did reconnect
  // Everything acknowledged is in the server's store.
  for (uint32_t t = 0; t < 4; ++t)
    for (size_t off = 0; off + kBlock <= kQuarter; off += kBlock) {
      auto want = pattern(kBlock, static_cast<uint32_t>(t * 1000 + off / kBlock));
      std::vector<std::byte> got(kBlock);
      ASSERT_TRUE(mem->read_at(got, t * kQuarter + off));
      ASSERT_EQ(got, want) << "block at " << t * kQuarter + off;
    }
}

TEST(WireReconnect, AnOutageLongerThanTheTimeoutFailsThenRecovers) {
  auto mem = *MemStore::create(1 << 20);
  WireServer server(mem, {});
  Line line(server);
  RemoteOptions o;
  o.outage_timeout = 300ms;
  auto store = *RemoteStore::open(line.dialer(), o, "outage-test");
  std::vector<std::byte> buf(4096);
  line.down = true;
  line.cut();
  auto t0 = std::chrono::steady_clock::now();
  Status st = store->read_at(buf, 0);
  EXPECT_EQ(st.code(), ETIMEDOUT) << st.message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);  // bounded, not never
  EXPECT_EQ(store->write_at(buf, 0).code(), ETIMEDOUT);   // fails fast meanwhile
  line.down = false;
  Status back;
  for (int i = 0; i < 100 && !(back = store->read_at(buf, 0)); ++i) std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(back) << back.message();
}

TEST(WireReconnect, WithoutATimeoutRequestsWaitThroughTheOutage) {
  auto mem = *MemStore::create(1 << 20);
  auto want = pattern(8192, 7);
  ASSERT_TRUE(mem->write_at(want, 4096));
  WireServer server(mem, {});
  Line line(server);
  RemoteOptions o;
  o.outage_timeout = 0ms;
  auto store = *RemoteStore::open(line.dialer(), o, "swap-test");
  line.down = true;
  line.cut();
  std::atomic<bool> finished{false};
  Status st;
  std::vector<std::byte> got(8192);
  std::jthread reader([&] {
    st = store->read_at(got, 4096);
    finished = true;
  });
  std::this_thread::sleep_for(700ms);  // several backoff rounds
  EXPECT_FALSE(finished);              // still waiting, not failed
  line.down = false;
  reader.join();
  EXPECT_TRUE(st) << st.message();
  EXPECT_EQ(got, want);
}

TEST(WireReconnect, ARestartedMemoryServerIsNotMistakenForTheOldOne) {
  auto first = *MemStore::create(1 << 20);
  WireServer old_server(first, {});
  Line line(old_server);
  auto store = *RemoteStore::open(line.dialer(), {}, "restart-test");
  EXPECT_NE(store->terms().store_id, 0u);  // memory: a random id
  auto data = pattern(4096, 1);
  ASSERT_TRUE(store->write_at(data, 0));
  // The "restarted" server: same size, but empty.
  auto second = *MemStore::create(1 << 20);
  WireServer new_server(second, {});
  line.server = &new_server;
  line.cut();
  std::vector<std::byte> got(4096);
  Status st = store->read_at(got, 0);
  EXPECT_EQ(st.code(), EIO) << st.message();
  EXPECT_NE(st.message().find("content is gone"), std::string::npos) << st.message();
  EXPECT_EQ(store->write_at(data, 0).code(), EIO);  // for good
}

TEST(WireReconnect, WithoutADialerALostConnectionIsFinal) {
  auto mem = *MemStore::create(1 << 20);
  WireServer server(mem, {});
  auto [a, b] = test::pair_of_sockets();
  server.adopt(std::move(b));
  int raw = a.get();
  auto store = *RemoteStore::open(std::make_unique<Channel>(std::move(a)), {}, "once");
  ::shutdown(raw, SHUT_RDWR);
  std::vector<std::byte> buf(4096);
  EXPECT_EQ(store->read_at(buf, 0).code(), ECONNRESET);
}

// TLS with a pre-shared key over a unix socket, and a wrong key refused.
TEST(WireReconnect, TlsWithPreSharedKeys) {
  char tmpl[] = "/tmp/memsync-wire-tls.XXXXXX";
  std::filesystem::path dir = ::mkdtemp(tmpl);
  std::ofstream(dir / "server.psk") << "alice:00112233445566778899aabbccddeeff\n";
  std::ofstream(dir / "wrong.psk") << "alice:ffeeddccbbaa99887766554433221100\n";
  auto ctx = TlsServerContext::create(TlsServerOptions{"", "", "", (dir / "server.psk").string()});
  ASSERT_TRUE(ctx) << ctx.status().message();
  auto mem = *MemStore::create(1 << 20);
  WireServerOptions so;
  so.tls = *ctx;
  WireServer server(mem, so);
  auto ep = *parse_endpoint("unix:" + (dir / "s.sock").string());
  auto listeners = listen_endpoint(ep);
  ASSERT_TRUE(listeners);
  std::jthread runner([&] { (void)server.run(std::move(listeners).value()); });

  RemoteTarget target{ep, TlsClientOptions{}};
  target.tls->psk_file = (dir / "server.psk").string();
  auto store = RemoteStore::connect(target, {});
  ASSERT_TRUE(store) << store.status().message();
  auto data = pattern(200000, 3);
  ASSERT_TRUE((*store)->write_at(data, 1000));
  std::vector<std::byte> got(data.size());
  ASSERT_TRUE((*store)->read_at(got, 1000));
  EXPECT_EQ(got, data);
  EXPECT_TRUE(mem->read_at(got, 1000));
  EXPECT_EQ(got, data);

  target.tls->psk_file = (dir / "wrong.psk").string();
  auto refused = RemoteStore::connect(target, {});
  EXPECT_FALSE(refused);
  RemoteTarget plain{ep, std::nullopt};  // a plaintext client gets no HELLO reply
  auto no_tls = RemoteStore::connect(plain, {});
  EXPECT_FALSE(no_tls);
  store->reset();
  server.stop();
  runner.join();
  std::filesystem::remove_all(dir);
}

}  // namespace
