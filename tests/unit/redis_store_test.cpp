// RedisStore against a real redis-server, started for each test on a unix
// socket in a fresh directory (no persistence) and killed afterwards. Proves:
// a fresh store reads zeros; random unaligned I/O matches an in-memory
// reference byte for byte and keys exist exactly for non-zero chunks;
// concurrent writers to distinct ranges and to the same chunks all land;
// trim and zeroing delete keys; a key of the wrong length is EIO, not a
// crash; a killed or hung server fails requests in bounded time and a
// restarted one is used again; read-only stores refuse writes; requests are
// batched (one MGET / MSET per batch, not one command per chunk); db,
// prefix and password options; option checks say what is wrong.
// redis-server missing is a failure naming `make deps`, never a skip.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "backend/redis_store.hpp"
#include "util/process.hpp"

using namespace memsync;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kChunk = 4096;

std::vector<std::byte> pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = std::byte(rng() & 0xff);
  return v;
}

bool all_zero(std::span<const std::byte> s) {
  return std::all_of(s.begin(), s.end(), [](std::byte b) { return b == std::byte{0}; });
}

struct FreeReply {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, FreeReply>;

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/memsync-redis-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << "mkdtemp: " << std::strerror(errno);
    dir_ = tmpl;
    sock_ = dir_ + "/redis.sock";
    start_redis();
  }

  void TearDown() override {
    stop_redis();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Starts redis-server on sock_ (output to DIR/redis.log) and waits until
  // it answers PING. PR_SET_PDEATHSIG kills it should this test process die
  // before TearDown, so a crash never leaves a server (and our pipes) behind.
  void start_redis() {
    const std::string exe = find_in_path("redis-server");
    if (exe.empty()) FAIL() << "missing redis-server: run make deps";
    std::vector<std::string> args = {exe, "--port", "0", "--unixsocket", sock_, "--unixsocketperm", "700",
                                     "--save", "", "--appendonly", "no", "--dir", dir_, "--daemonize", "no"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int log = ::open((dir_ + "/redis.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(log, 0) << std::strerror(errno);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {  // only async-signal-safe calls until exec
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);
      ::dup2(log, 1);
      ::dup2(log, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(log);
    ASSERT_GT(pid_, 0) << "fork: " << std::strerror(errno);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto done = poll_exit_code(pid_);
      if (done && *done) {
        pid_ = -1;
        FAIL() << "redis-server exited with " << **done << "; log:\n" << log_text();
      }
      Reply r = command({"PING"});
      if (r && r->type == REDIS_REPLY_STATUS) return;
      std::this_thread::sleep_for(10ms);
    }
    FAIL() << "redis-server did not answer on " << sock_ << " within 10 s; log:\n" << log_text();
  }

  static std::string find_in_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "");
    for (std::string d; std::getline(dirs, d, ':');) {
      const std::string candidate = (d.empty() ? "." : d) + "/" + name;
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return "";
  }

  void stop_redis() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    wait_exit_code(pid_).status().ignore();
    pid_ = -1;
  }

  std::string log_text() const {
    std::ifstream in(dir_ + "/redis.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // One command on a fresh raw connection (in `db`); null if unreachable.
  Reply command(const std::vector<std::string>& args, unsigned db = 0) {
    timeval tv{2, 0};
    std::unique_ptr<redisContext, void (*)(redisContext*)> c(redisConnectUnixWithTimeout(sock_.c_str(), tv),
                                                             redisFree);
    if (!c || c->err) return nullptr;
    if (db != 0) Reply select(static_cast<redisReply*>(redisCommand(c.get(), "SELECT %u", db)));
    std::vector<const char*> argv;
    std::vector<size_t> len;
    for (const auto& a : args) {
      argv.push_back(a.data());
      len.push_back(a.size());
    }
    return Reply(static_cast<redisReply*>(redisCommandArgv(c.get(), static_cast<int>(argv.size()), argv.data(),
                                                           len.data())));
  }
  long long integer(const std::vector<std::string>& args, unsigned db = 0) {
    Reply r = command(args, db);
    EXPECT_TRUE(r && r->type == REDIS_REPLY_INTEGER) << args[0] << " did not answer an integer";
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
  }
  // calls= of one command in INFO commandstats (0 if never called).
  long long calls(const std::string& name) {
    Reply r = command({"INFO", "commandstats"});
    if (!r || r->type != REDIS_REPLY_STRING) return -1;
    std::string info(r->str, r->len), tag = "cmdstat_" + name + ":calls=";
    auto pos = info.find(tag);
    return pos == std::string::npos ? 0 : std::stoll(info.substr(pos + tag.size()));
  }

  Endpoint endpoint() const { return *parse_endpoint("unix:" + sock_); }

  RedisStoreOptions options(uint64_t size) const {
    RedisStoreOptions o;
    o.size = size;
    o.chunk = kChunk;
    return o;
  }
  std::shared_ptr<RedisStore> open(const RedisStoreOptions& o) {
    auto s = RedisStore::open(endpoint(), o);
    EXPECT_TRUE(s) << s.status().message();
    return s ? *s : nullptr;
  }

  std::string dir_, sock_;
  pid_t pid_ = -1;
};

TEST_F(RedisStoreTest, FreshStoreReadsZerosAndStoresNothing) {
  auto store = open(options(1000000 + 123));
  ASSERT_TRUE(store);
  std::vector<std::byte> buf(store->size(), std::byte{1});
  ASSERT_TRUE(store->read_at(buf, 0));
  EXPECT_TRUE(all_zero(buf));
  std::vector<std::byte> small(77, std::byte{1});
  ASSERT_TRUE(store->read_at(small, 4090));
  EXPECT_TRUE(all_zero(small));
  EXPECT_EQ(integer({"DBSIZE"}), 0);
  EXPECT_EQ(store->describe(), "redis:unix:" + sock_ + " (db 0, prefix memsync:, chunk 4K)");
  EXPECT_TRUE(store->can_multi_conn());
  EXPECT_TRUE(store->can_trim());
  EXPECT_TRUE(store->sync());
}

// Random reads, writes (some all-zero), zeroing and trims at any alignment,
// checked against a plain buffer; afterwards a key exists exactly for each
// non-zero chunk and every key holds a whole chunk (the short last too).
TEST_F(RedisStoreTest, RandomUnalignedOpsMatchReference) {
  const uint64_t size = 75 * kChunk + 321;
  auto o = options(size);
  o.connections = 2;
  auto store = open(o);
  ASSERT_TRUE(store);
  std::vector<std::byte> ref(size);
  std::mt19937_64 rng(42);
  for (int op = 0; op < 600; ++op) {
    uint64_t len = rng() % 5 == 0 ? rng() % size + 1 : rng() % (3 * kChunk + 1000) + 1;
    len = std::min(len, size);
    const uint64_t off = rng() % (size - len + 1);
    switch (rng() % 5) {
      case 0:
      case 1: {
        auto data = pattern(len, static_cast<uint32_t>(op));
        if (rng() % 4 == 0) std::fill(data.begin(), data.end(), std::byte{0});
        ASSERT_TRUE(store->write_at(data, off)) << "op " << op;
        std::copy(data.begin(), data.end(), ref.begin() + static_cast<ptrdiff_t>(off));
        break;
      }
      case 2: {
        std::vector<std::byte> back(len);
        ASSERT_TRUE(store->read_at(back, off)) << "op " << op;
        ASSERT_TRUE(std::equal(back.begin(), back.end(), ref.begin() + static_cast<ptrdiff_t>(off)))
            << "op " << op << ": read of " << len << " at " << off << " differs from what was written";
        break;
      }
      case 3:
        ASSERT_TRUE(store->write_zeroes(off, len, rng() % 2 == 0)) << "op " << op;
        std::fill_n(ref.begin() + static_cast<ptrdiff_t>(off), len, std::byte{0});
        break;
      default:
        ASSERT_TRUE(store->trim(off, len)) << "op " << op;
        std::fill_n(ref.begin() + static_cast<ptrdiff_t>(off), len, std::byte{0});
    }
  }
  std::vector<std::byte> back(size);
  ASSERT_TRUE(store->read_at(back, 0));
  EXPECT_TRUE(back == ref) << "the whole store differs from the reference";
  const uint64_t chunks = (size + kChunk - 1) / kChunk;
  for (uint64_t i = 0; i < chunks; ++i) {
    const uint64_t n = std::min<uint64_t>(kChunk, size - i * kChunk);
    const bool nonzero = !all_zero(std::span(ref).subspan(i * kChunk, n));
    EXPECT_EQ(integer({"EXISTS", store->key(i)}), nonzero ? 1 : 0) << "chunk " << i;
    if (nonzero) {
      EXPECT_EQ(integer({"STRLEN", store->key(i)}), kChunk) << "chunk " << i;
    }
  }
}

// Eight threads, each writing at random inside its own region; regions are
// not chunk-aligned, so neighbours share a chunk and read-modify-write it
// at the same time. Every thread's last bytes must be there.
TEST_F(RedisStoreTest, ConcurrentWritersToDistinctRangesAllLand) {
  constexpr int kThreads = 8;
  const uint64_t region = 5 * kChunk + 1234;
  auto store = open(options(kThreads * region));
  ASSERT_TRUE(store);
  std::vector<std::vector<std::byte>> refs(kThreads, std::vector<std::byte>(region));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
      for (int i = 0; i < 60; ++i) {
        const uint64_t len = rng() % (2 * kChunk) + 1, off = rng() % (region - len + 1);
        auto data = pattern(len, static_cast<uint32_t>(t * 1000 + i));
        if (!store->write_at(data, t * region + off)) ++failures;
        std::copy(data.begin(), data.end(), refs[t].begin() + static_cast<ptrdiff_t>(off));
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  std::vector<std::byte> back(store->size());
  ASSERT_TRUE(store->read_at(back, 0));
  for (int t = 0; t < kThreads; ++t)
    EXPECT_TRUE(std::equal(refs[t].begin(), refs[t].end(), back.begin() + static_cast<ptrdiff_t>(t * region)))
        << "region of thread " << t << " lost writes";
}

// Eight threads write interleaved 24-byte slots of the same four chunks
// (slot s belongs to thread s % 8; some slots straddle two chunks), all at
// once, for several rounds: without per-chunk serialisation of the
// read-modify-write, slots written by other threads would be lost.
TEST_F(RedisStoreTest, ConcurrentPartialWritesToOneChunkAllLand) {
  constexpr int kThreads = 8;
  constexpr uint64_t kSlot = 24, kSpan = 4 * kChunk, kSlots = kSpan / kSlot;
  auto o = options(kSpan);
  o.connections = kThreads;
  auto store = open(o);
  ASSERT_TRUE(store);
  auto slot_bytes = [](uint64_t s, int round) {
    std::vector<std::byte> v(kSlot);
    for (uint64_t i = 0; i < kSlot; ++i) v[i] = std::byte(static_cast<uint8_t>(1 + (s * 7 + i + round * 13) % 250));
    return v;
  };
  for (int round = 0; round < 3; ++round) {
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::vector<uint64_t> mine;
        for (uint64_t s = static_cast<uint64_t>(t); s < kSlots; s += kThreads) mine.push_back(s);
        std::shuffle(mine.begin(), mine.end(), std::mt19937(static_cast<uint32_t>(t + round * 100)));
        for (uint64_t s : mine)
          if (!store->write_at(slot_bytes(s, round), s * kSlot)) ++failures;
      });
    }
    for (auto& th : threads) th.join();
    ASSERT_EQ(failures.load(), 0);
    std::vector<std::byte> back(kSpan);
    ASSERT_TRUE(store->read_at(back, 0));
    for (uint64_t s = 0; s < kSlots; ++s) {
      auto want = slot_bytes(s, round);
      ASSERT_TRUE(std::equal(want.begin(), want.end(), back.begin() + static_cast<ptrdiff_t>(s * kSlot)))
          << "round " << round << ": slot " << s << " of thread " << s % kThreads << " was lost";
    }
  }
}

// One thread rewrites a whole chunk with alternating contents while another
// writes ten bytes inside it. A partial write that wrote back a stale copy
// of the chunk would leave the older whole-chunk content around its bytes;
// every outcome must be the last whole write, with or without those bytes.
TEST_F(RedisStoreTest, PartialWriteNeverRevertsAConcurrentWholeChunkWrite) {
  auto store = open(options(2 * kChunk));
  ASSERT_TRUE(store);
  const std::vector<std::byte> p[2] = {pattern(kChunk, 21), pattern(kChunk, 22)};
  const auto q = pattern(10, 23);
  for (int round = 0; round < 5; ++round) {
    constexpr int kWhole = 200;
    std::atomic<bool> done{false};
    std::atomic<int> failures{0};
    std::thread whole([&] {
      for (int i = 0; i < kWhole; ++i)
        if (!store->write_at(p[i % 2], kChunk)) ++failures;
      done = true;
    });
    std::thread part([&] {
      while (!done)
        if (!store->write_at(q, kChunk + 100)) ++failures;
    });
    whole.join();
    part.join();
    ASSERT_EQ(failures.load(), 0);
    std::vector<std::byte> back(kChunk);
    ASSERT_TRUE(store->read_at(back, kChunk));
    const auto& last = p[(kWhole - 1) % 2];
    ASSERT_TRUE(std::equal(back.begin(), back.begin() + 100, last.begin()) &&
                std::equal(back.begin() + 110, back.end(), last.begin() + 110))
        << "round " << round << ": a partial write restored an older whole-chunk write";
  }
}

TEST_F(RedisStoreTest, TrimAndZeroesDeleteKeysAndReadZeros) {
  const uint64_t chunks = 64, size = chunks * kChunk;
  auto store = open(options(size));
  ASSERT_TRUE(store);
  auto data = pattern(size, 7);
  for (auto& b : data) b |= std::byte{1};  // no zero bytes: every chunk is stored
  ASSERT_TRUE(store->write_at(data, 0));
  EXPECT_EQ(integer({"DBSIZE"}), static_cast<long long>(chunks));

  const uint64_t off = 10 * kChunk + 100, len = 5 * kChunk;
  ASSERT_TRUE(store->trim(off, len));
  for (uint64_t i = 11; i <= 14; ++i) EXPECT_EQ(integer({"EXISTS", store->key(i)}), 0) << "chunk " << i;
  EXPECT_EQ(integer({"EXISTS", store->key(10)}), 1) << "partly trimmed chunk 10 still has data";
  EXPECT_EQ(integer({"EXISTS", store->key(15)}), 1) << "partly trimmed chunk 15 still has data";
  std::vector<std::byte> back(size);
  ASSERT_TRUE(store->read_at(back, 0));
  EXPECT_TRUE(all_zero(std::span(back).subspan(off, len)));
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + static_cast<ptrdiff_t>(off), data.begin()));
  EXPECT_TRUE(std::equal(back.begin() + static_cast<ptrdiff_t>(off + len), back.end(),
                         data.begin() + static_cast<ptrdiff_t>(off + len)));

  ASSERT_TRUE(store->write_zeroes(20 * kChunk, kChunk, false));
  EXPECT_EQ(integer({"EXISTS", store->key(20)}), 0) << "zeroing a whole chunk deletes it, even without may_punch";
  std::vector<std::byte> zeros(kChunk);
  ASSERT_TRUE(store->write_at(zeros, 30 * kChunk));
  EXPECT_EQ(integer({"EXISTS", store->key(30)}), 0) << "writing a chunk of zeros deletes it";
  ASSERT_TRUE(store->write_zeroes(40 * kChunk, 4000, true));
  EXPECT_EQ(integer({"EXISTS", store->key(40)}), 1);
  ASSERT_TRUE(store->write_zeroes(40 * kChunk + 4000, kChunk - 4000, true));
  EXPECT_EQ(integer({"EXISTS", store->key(40)}), 0) << "a chunk zeroed in two parts is deleted";

  ASSERT_TRUE(store->trim(0, size));
  EXPECT_EQ(integer({"DBSIZE"}), 0);
  ASSERT_TRUE(store->read_at(back, 0));
  EXPECT_TRUE(all_zero(back));
}

TEST_F(RedisStoreTest, WrongLengthKeyIsEioNamingTheKey) {
  auto o = options(8 * kChunk);
  o.prefix = "t:";
  auto store = open(o);
  ASSERT_TRUE(store);
  auto data = pattern(4 * kChunk, 3);
  ASSERT_TRUE(store->write_at(data, 0));
  ASSERT_TRUE(command({"SET", "t:2", "short"}));

  std::vector<std::byte> buf(kChunk);
  Status st = store->read_at(buf, 2 * kChunk);
  EXPECT_EQ(st.code(), EIO);
  EXPECT_NE(st.message().find("key t:2 holds 5 bytes"), std::string::npos) << st.message();
  std::vector<std::byte> wide(3 * kChunk);
  EXPECT_EQ(store->read_at(wide, kChunk).code(), EIO);
  std::vector<std::byte> few(10, std::byte{9});
  EXPECT_EQ(store->write_at(few, 2 * kChunk + 5).code(), EIO) << "a partial write must not build on a bad value";
  ASSERT_TRUE(store->read_at(buf, kChunk)) << "other chunks still read";

  ASSERT_TRUE(command({"SET", "t:1", std::string(kChunk + 1, 'x')}));
  st = store->read_at(buf, kChunk);
  EXPECT_EQ(st.code(), EIO);
  EXPECT_NE(st.message().find("t:1"), std::string::npos) << st.message();

  ASSERT_TRUE(store->write_at(std::span(data).subspan(0, kChunk), 2 * kChunk)) << "a whole-chunk write replaces it";
  ASSERT_TRUE(store->read_at(buf, 2 * kChunk));
  EXPECT_TRUE(std::equal(buf.begin(), buf.end(), data.begin()));

  EXPECT_EQ(integer({"RPUSH", "t:5", "a"}), 1);
  ASSERT_TRUE(store->read_at(buf, 5 * kChunk)) << "a key of another type reads as missing";
  EXPECT_TRUE(all_zero(buf));
}

// The server is SIGKILLed while four threads do I/O: every request returns
// (with EIO) instead of hanging, and after a restart on the same socket the
// same store works again through its stale pooled connections.
TEST_F(RedisStoreTest, KilledServerFailsRequestsAndRestartRecovers) {
  auto o = options(256 * kChunk);
  auto store = open(o);
  ASSERT_TRUE(store);
  std::atomic<bool> killed{false}, stop{false};
  std::atomic<int> errors_after_kill{0}, wrong_codes{0};
  std::atomic<int64_t> slowest_ms{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t));
      std::vector<std::byte> buf = pattern(3 * kChunk + 17, static_cast<uint32_t>(t));
      while (!stop) {
        const uint64_t off = rng() % (store->size() - buf.size());
        const auto start = std::chrono::steady_clock::now();
        Status st = rng() % 2 ? store->write_at(buf, off) : store->read_at(buf, off);
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
        int64_t prev = slowest_ms;
        while (ms.count() > prev && !slowest_ms.compare_exchange_weak(prev, ms.count())) {}
        if (!st) {
          if (st.code() != EIO) ++wrong_codes;
          if (killed) ++errors_after_kill;
        }
      }
    });
  }
  std::this_thread::sleep_for(200ms);
  stop_redis();
  killed = true;
  // Until every thread has seen the loss (bounded: a loaded machine may be
  // slow to schedule them, but they must not hang).
  for (int i = 0; i < 200 && errors_after_kill < 4; ++i) std::this_thread::sleep_for(50ms);
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_GT(errors_after_kill.load(), 0);
  EXPECT_EQ(wrong_codes.load(), 0) << "connection failures are EIO";
  EXPECT_LT(slowest_ms.load(), 10000) << "a request hung after the server died";

  std::vector<std::byte> buf(kChunk);
  Status st = store->read_at(buf, 0);
  EXPECT_EQ(st.code(), EIO);
  EXPECT_NE(st.message().find("redis unix:" + sock_), std::string::npos) << st.message();

  start_redis();
  ASSERT_FALSE(HasFatalFailure());
  threads.clear();
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto data = pattern(2 * kChunk + 5, static_cast<uint32_t>(100 + t));
      std::vector<std::byte> back(data.size());
      const uint64_t off = static_cast<uint64_t>(t) * 10 * kChunk + 3;
      if (!store->write_at(data, off) || !store->read_at(back, off) || back != data) ++failures;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0) << "the store did not recover after the server restarted";
}

// Every pooled connection is alive when the server restarts between two
// requests: each request's stale connection fails once, is replaced, and
// the request succeeds; the caller never sees the restart.
TEST_F(RedisStoreTest, RestartBetweenRequestsIsInvisible) {
  constexpr int kThreads = 4;
  auto o = options(64 * kChunk);
  o.connections = kThreads;
  auto store = open(o);
  ASSERT_TRUE(store);
  auto round = [&](uint32_t seed) {
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        auto data = pattern(3 * kChunk + 1, seed + static_cast<uint32_t>(t));
        std::vector<std::byte> back(data.size());
        const uint64_t off = static_cast<uint64_t>(t) * 8 * kChunk + 7;
        for (int i = 0; i < 5; ++i)
          if (!store->write_at(data, off) || !store->read_at(back, off) || back != data) ++failures;
      });
    }
    for (auto& th : threads) th.join();
    return failures.load();
  };
  ASSERT_EQ(round(1), 0);
  stop_redis();
  start_redis();
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(round(2), 0) << "stale pooled connections must be replaced, not reported";
}

// A stopped (hung) server: the request fails after the command timeout
// rather than waiting forever, and once the server runs again so does the store.
TEST_F(RedisStoreTest, HungServerTimesOut) {
  auto o = options(16 * kChunk);
  o.command_timeout = 300ms;
  auto store = open(o);
  ASSERT_TRUE(store);
  auto data = pattern(kChunk, 5);
  ASSERT_TRUE(store->write_at(data, 0));
  ASSERT_EQ(::kill(pid_, SIGSTOP), 0);
  std::vector<std::byte> buf(kChunk);
  const auto start = std::chrono::steady_clock::now();
  Status st = store->read_at(buf, 0);
  const auto took = std::chrono::steady_clock::now() - start;
  ::kill(pid_, SIGCONT);
  EXPECT_EQ(st.code(), EIO);
  EXPECT_NE(st.message().find("no reply within 300 ms"), std::string::npos) << st.message();
  EXPECT_LT(took, 5s) << "a timed-out request must not be retried at length";
  ASSERT_TRUE(store->read_at(buf, 0));
  EXPECT_TRUE(buf == data);
}

TEST_F(RedisStoreTest, ReadOnlyStoreRefusesWrites) {
  auto writer = open(options(8 * kChunk));
  ASSERT_TRUE(writer);
  auto data = pattern(kChunk, 9);
  ASSERT_TRUE(writer->write_at(data, 0));
  auto o = options(8 * kChunk);
  o.read_only = true;
  auto ro = open(o);
  ASSERT_TRUE(ro);
  EXPECT_TRUE(ro->is_read_only());
  EXPECT_FALSE(ro->can_trim());
  EXPECT_FALSE(ro->can_fast_zero());
  EXPECT_EQ(ro->write_at(data, kChunk).code(), EPERM);
  EXPECT_EQ(ro->trim(0, kChunk).code(), EPERM);
  EXPECT_EQ(ro->write_zeroes(0, 10, false).code(), EPERM);
  std::vector<std::byte> back(kChunk);
  ASSERT_TRUE(ro->read_at(back, 0));
  EXPECT_TRUE(back == data);
  EXPECT_EQ(integer({"DBSIZE"}), 1);
}

// Requests are batched: one MGET per read and one MSET per aligned write of
// 256 chunks, one MGET of the edges for an unaligned write, and a 20 MiB
// request of 64K chunks is three 8 MiB batches.
TEST_F(RedisStoreTest, RequestsAreBatchedNotOneCommandPerChunk) {
  auto store = open(options(512 * kChunk));
  ASSERT_TRUE(store);
  auto data = pattern(256 * kChunk, 11);
  ASSERT_TRUE(command({"CONFIG", "RESETSTAT"}));
  ASSERT_TRUE(store->write_at(data, 0));
  EXPECT_EQ(calls("mset"), 1);
  EXPECT_EQ(calls("mget"), 0) << "an aligned write reads nothing";
  EXPECT_EQ(calls("set"), 0);
  ASSERT_TRUE(command({"CONFIG", "RESETSTAT"}));
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE(store->read_at(back, 0));
  EXPECT_EQ(calls("mget"), 1);
  EXPECT_EQ(calls("get"), 0);
  ASSERT_TRUE(command({"CONFIG", "RESETSTAT"}));
  ASSERT_TRUE(store->write_at(data, 100));
  EXPECT_EQ(calls("mget"), 1) << "one MGET for both partial edges";
  EXPECT_EQ(calls("mset"), 1);

  RedisStoreOptions big;
  big.size = 64 << 20;
  big.prefix = "big:";
  auto large = open(big);
  ASSERT_TRUE(large);
  auto twenty = pattern(20 << 20, 12);
  ASSERT_TRUE(command({"CONFIG", "RESETSTAT"}));
  ASSERT_TRUE(large->write_at(twenty, 0));
  EXPECT_EQ(calls("mset"), 3);
  std::vector<std::byte> back20(twenty.size());
  ASSERT_TRUE(large->read_at(back20, 0));
  EXPECT_EQ(calls("mget"), 3);
  EXPECT_TRUE(back20 == twenty);
}

TEST_F(RedisStoreTest, PoolBoundsConnections) {
  auto o = options(64 * kChunk);
  o.connections = 2;
  auto store = open(o);
  ASSERT_TRUE(store);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto data = pattern(3 * kChunk, static_cast<uint32_t>(t));
      std::vector<std::byte> back(data.size());
      for (int i = 0; i < 20; ++i) {
        const uint64_t off = static_cast<uint64_t>(t) * 8 * kChunk + static_cast<uint64_t>(i);
        if (!store->write_at(data, off) || !store->read_at(back, off) || back != data) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  Reply r = command({"CLIENT", "LIST"});
  ASSERT_TRUE(r && r->type == REDIS_REPLY_STRING);
  const std::string list(r->str, r->len);
  const auto lines = std::count(list.begin(), list.end(), '\n');
  EXPECT_LE(lines, 3) << "two pooled connections and this one:\n" << list;
}

TEST_F(RedisStoreTest, DbAndPrefixSeparateStores) {
  auto o = options(4 * kChunk);
  o.prefix = "a:";
  auto a0 = open(o);
  o.db = 1;
  auto a1 = open(o);
  o.db = 0;
  o.prefix = "b:";
  auto b0 = open(o);
  ASSERT_TRUE(a0 && a1 && b0);
  auto x = pattern(kChunk, 1), y = pattern(kChunk, 2);
  ASSERT_TRUE(a0->write_at(x, 0));
  ASSERT_TRUE(a1->write_at(y, 0));
  std::vector<std::byte> back(kChunk);
  ASSERT_TRUE(a0->read_at(back, 0));
  EXPECT_TRUE(back == x);
  ASSERT_TRUE(a1->read_at(back, 0));
  EXPECT_TRUE(back == y);
  ASSERT_TRUE(b0->read_at(back, 0));
  EXPECT_TRUE(all_zero(back));
  EXPECT_EQ(integer({"EXISTS", "a:0"}), 1);
  EXPECT_EQ(integer({"EXISTS", "a:0"}, 1), 1);
  EXPECT_EQ(integer({"DBSIZE"}, 1), 1);
  EXPECT_EQ(a1->describe(), "redis:unix:" + sock_ + " (db 1, prefix a:, chunk 4K)");
}

TEST_F(RedisStoreTest, PasswordIsSentAndChecked) {
  Reply r = command({"CONFIG", "SET", "requirepass", "s3cret"});
  ASSERT_TRUE(r && r->type == REDIS_REPLY_STATUS);
  auto o = options(4 * kChunk);
  auto s = RedisStore::open(endpoint(), o);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.status().code(), EACCES) << s.status().message();
  o.password = "wrong";
  s = RedisStore::open(endpoint(), o);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.status().code(), EACCES) << s.status().message();
  o.password = "s3cret";
  o.connections = 3;
  auto store = open(o);
  ASSERT_TRUE(store);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 3; ++t)  // the lazily opened connections authenticate too
    threads.emplace_back([&] {
      auto data = pattern(kChunk, 4);
      if (!store->write_at(data, 0)) ++failures;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(RedisStoreTest, OpenRefusesBadEndpointsAndMissingServers) {
  auto o = options(4 * kChunk);
  auto s = RedisStore::open(*parse_endpoint("unix:" + dir_ + "/none.sock"), o);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.status().code(), EIO);
  EXPECT_NE(s.status().message().find("redis unix:" + dir_ + "/none.sock"), std::string::npos)
      << s.status().message();
  s = RedisStore::open(*parse_endpoint("unix:@abstract"), o);
  EXPECT_EQ(s.status().code(), EINVAL);
  s = RedisStore::open(*parse_endpoint("fd:3"), o);
  EXPECT_EQ(s.status().code(), EINVAL);
  s = RedisStore::open(*parse_endpoint("-"), o);
  EXPECT_EQ(s.status().code(), EINVAL);
  o.chunk = 1000;
  s = RedisStore::open(endpoint(), o);
  EXPECT_EQ(s.status().code(), EINVAL);

  auto store = open(options(4 * kChunk));
  ASSERT_TRUE(store);
  std::vector<std::byte> buf(10);
  EXPECT_EQ(store->read_at(buf, 4 * kChunk - 5).code(), EINVAL) << "beyond the end";
  EXPECT_EQ(store->write_at(buf, UINT64_MAX - 2).code(), EINVAL);
}

// The same store over TCP: Redis 7 opens a TCP listener at runtime
// (CONFIG SET port); tcp::PORT (empty host) means loopback.
TEST_F(RedisStoreTest, TcpEndpointWorks) {
  UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::getsockname(probe.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string port = std::to_string(ntohs(a.sin_port));
  probe.reset();  // free the port for Redis
  Reply r = command({"CONFIG", "SET", "port", port});
  ASSERT_TRUE(r && r->type == REDIS_REPLY_STATUS) << (r && r->str ? r->str : "no reply");
  for (const std::string& ep : {"tcp:127.0.0.1:" + port, "tcp::" + port}) {
    auto s = RedisStore::open(*parse_endpoint(ep), options(4 * kChunk));
    ASSERT_TRUE(s) << ep << ": " << s.status().message();
    auto data = pattern(kChunk + 10, 31);
    std::vector<std::byte> back(data.size());
    ASSERT_TRUE((*s)->write_at(data, 100));
    ASSERT_TRUE((*s)->read_at(back, 100));
    EXPECT_TRUE(back == data) << ep;
  }
}

TEST(RedisOptions, CheckSaysWhatIsWrong) {
  auto message = [](auto change) {
    RedisStoreOptions o;
    o.size = 1 << 20;
    change(o);
    Status st = check_redis_options(o);
    EXPECT_TRUE(st.is_ok() || st.code() == EINVAL);
    return st.is_ok() ? std::string("ok") : st.message();
  };
  EXPECT_EQ(message([](auto&) {}), "ok");
  EXPECT_EQ(message([](auto& o) { o.size = 12345; }), "ok") << "any positive size";
  EXPECT_EQ(message([](auto& o) { o.size = 0; }), "redis: size must be given and positive (?size=SIZE)");
  EXPECT_EQ(message([](auto& o) { o.chunk = 1000; }),
            "redis: chunk 1000 is not a power of two between 512 and 32M");
  EXPECT_EQ(message([](auto& o) { o.chunk = 256; }), "redis: chunk 256 is not a power of two between 512 and 32M");
  EXPECT_EQ(message([](auto& o) { o.chunk = 64u << 20; }),
            "redis: chunk 67108864 is not a power of two between 512 and 32M");
  EXPECT_EQ(message([](auto& o) { o.chunk = 512; }), "ok");
  EXPECT_EQ(message([](auto& o) { o.chunk = 32u << 20; }), "ok");
  EXPECT_EQ(message([](auto& o) { o.prefix = ""; }),
            "redis: prefix must not be empty (keys named by bare numbers would mix with other data)");
  EXPECT_EQ(message([](auto& o) { o.db = 16; }), "redis: db 16 is out of range (Redis databases are 0 to 15)");
  EXPECT_EQ(message([](auto& o) { o.connections = 0; }), "redis: connections must be between 1 and 64, not 0");
  EXPECT_EQ(message([](auto& o) { o.connections = 65; }), "redis: connections must be between 1 and 64, not 65");
  EXPECT_EQ(message([](auto& o) { o.password = ""; }), "redis: password must not be empty when given");
  EXPECT_EQ(message([](auto& o) { o.command_timeout = 0ms; }), "redis: timeouts must be positive");
}

}  // namespace
