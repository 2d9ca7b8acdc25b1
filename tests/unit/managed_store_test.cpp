// ManagedStore against real stores: pulls, urgent reads, pushes, flushes,
// partial chunks, failures, and many threads at once.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "backend/mem_store.hpp"
#include "managed/managed_store.hpp"

using namespace memsync;
using namespace std::chrono_literals;

namespace {

std::vector<std::byte> pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = std::byte(rng() & 0xff);
  return v;
}

std::shared_ptr<MemStore> mem_with(const std::vector<std::byte>& bytes) {
  auto m = *MemStore::create(bytes.size());
  EXPECT_TRUE(m->write_at(bytes, 0));
  return m;
}

std::vector<std::byte> contents(Store& s) {
  std::vector<std::byte> v(s.size());
  EXPECT_TRUE(s.read_at(v, 0));
  return v;
}

// A store that can be made to fail, or to block its reads until opened.
class Faulty final : public StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Status read_at(std::span<std::byte> b, uint64_t o) override {
    {
      std::unique_lock lock(mu_);
      ++reads_waiting_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return open_; });
      --reads_waiting_;
    }
    if (fail_reads) return Status::error(EIO, "injected read failure");
    return StoreWrapper::read_at(b, o);
  }
  Status write_at(std::span<const std::byte> b, uint64_t o) override {
    if (fail_writes) return Status::error(ENOSPC, "injected write failure");
    Status st = StoreWrapper::write_at(b, o);
    ++writes;  // after the bytes landed: a test that sees the count may read them
    return st;
  }
  void gate(bool open) {
    std::lock_guard lock(mu_);
    open_ = open;
    cv_.notify_all();
  }
  void wait_for_blocked_reads(int n) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return reads_waiting_ >= n; });
  }
  std::atomic<bool> fail_reads{false}, fail_writes{false};
  std::atomic<int> writes{0};

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int reads_waiting_ = 0;
};

ManagedOptions small(unsigned pull, unsigned push, std::chrono::milliseconds interval = 1h) {
  ManagedOptions o;
  o.chunk_size = 4096;
  o.pull_workers = pull;
  o.push_workers = push;
  o.push_interval = interval;
  o.max_batch = 64 * 1024;
  return o;
}

TEST(ManagedStore, ReadsFetchOnDemandWithoutPullers) {
  auto data = pattern(1 << 20, 1);
  auto remote = mem_with(data);
  auto cache = *MemStore::create(1 << 20);
  auto m = *ManagedStore::open(remote, remote, cache, small(0, 0));
  std::vector<std::byte> got(10000);
  ASSERT_TRUE(m->read_at(got, 123456));
  EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + 123456));
  auto p = m->progress();
  EXPECT_EQ(p.chunks, 256u);
  EXPECT_EQ(p.present, 3u);  // 123456..133455 touches chunks 30, 31, 32
}

TEST(ManagedStore, PullersCopyEverythingInOrder) {
  auto data = pattern((1 << 20) + 1000, 2);  // a partial last chunk
  auto remote = mem_with(data);
  auto cache = *MemStore::create(data.size());
  auto m = *ManagedStore::open(remote, remote, cache, small(4, 0));
  ASSERT_TRUE(m->wait_pulled(30s));
  EXPECT_EQ(contents(*cache), data);
  EXPECT_EQ(contents(*m), data);
}

// Pulls start small and double up to max_batch, so a fresh mount's first
// reads do not compete with megabytes of pulls already in flight.
TEST(ManagedStore, PullsStartSmallAndGrowToTheLargestBatch) {
  struct Recording final : StoreWrapper {
    using StoreWrapper::StoreWrapper;
    Status read_at(std::span<std::byte> b, uint64_t o) override {
      {
        std::lock_guard lock(mu);
        sizes.push_back(b.size());
      }
      return StoreWrapper::read_at(b, o);
    }
    std::mutex mu;
    std::vector<size_t> sizes;
  };
  auto data = pattern(8 << 20, 18);
  auto remote = std::make_shared<Recording>(mem_with(data));
  auto cache = *MemStore::create(data.size());
  ManagedOptions o = small(1, 0);
  o.max_batch = 1 << 20;
  auto m = *ManagedStore::open(remote, remote, cache, o);
  ASSERT_TRUE(m->wait_pulled(30s));
  EXPECT_EQ(contents(*cache), data);
  std::lock_guard lock(remote->mu);
  ASSERT_GE(remote->sizes.size(), 4u);
  EXPECT_EQ(remote->sizes[0], 256u * 1024);
  EXPECT_EQ(remote->sizes[1], 512u * 1024);
  EXPECT_EQ(remote->sizes[2], 1u << 20);
  EXPECT_EQ(*std::max_element(remote->sizes.begin(), remote->sizes.end()), 1u << 20);
}

TEST(ManagedStore, AnUrgentReadDoesNotWaitForBlockedPulls) {
  auto data = pattern(1 << 20, 3);
  auto remote = mem_with(data);
  auto slow = std::make_shared<Faulty>(remote);  // the background connection
  slow->gate(false);
  auto cache = *MemStore::create(1 << 20);
  auto m = *ManagedStore::open(slow, remote, cache, small(2, 0));
  slow->wait_for_blocked_reads(2);  // both pullers are stuck in the remote
  std::vector<std::byte> got(4096);
  ASSERT_TRUE(m->read_at(got, 900 * 1024));  // served through `urgent`
  EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + 900 * 1024));
  slow->gate(true);
  ASSERT_TRUE(m->wait_pulled(30s));
  EXPECT_EQ(contents(*cache), data);
}

TEST(ManagedStore, WritesReachTheRemoteOnSyncOnly) {
  auto data = pattern(256 * 1024, 4);
  auto remote = mem_with(data);
  auto cache = *MemStore::create(data.size());
  auto m = *ManagedStore::open(remote, remote, cache, small(0, 2));
  auto patch = pattern(100, 5);
  ASSERT_TRUE(m->write_at(patch, 5000));  // inside chunk 1, which is missing
  auto want = data;
  std::copy(patch.begin(), patch.end(), want.begin() + 5000);
  EXPECT_EQ(contents(*remote), data);  // not pushed yet (interval: 1 h)
  EXPECT_EQ(m->progress().dirty, 1u);
  std::vector<std::byte> got(want.size());
  ASSERT_TRUE(m->read_at(got, 0));
  EXPECT_EQ(got, want);  // the chunk's other bytes were fetched, not zeros
  ASSERT_TRUE(m->sync());
  EXPECT_EQ(contents(*remote), want);
  EXPECT_EQ(m->progress().dirty, 0u);
}

// A FUA write pushes its own chunks, not everything dirty (a writethrough
// client would otherwise push the whole mount on every write).
TEST(ManagedStore, SyncRangePushesOnlyThatRange) {
  auto data = pattern(256 * 1024, 14);
  auto remote = mem_with(data);
  auto cache = *MemStore::create(data.size());
  auto m = *ManagedStore::open(remote, remote, cache, small(4, 2));
  ASSERT_TRUE(m->wait_pulled(30s));
  auto a = pattern(4096, 15), b = pattern(4096, 16);
  ASSERT_TRUE(m->write_at(a, 8192));    // chunk 2
  ASSERT_TRUE(m->write_at(b, 102400));  // chunk 25
  ASSERT_TRUE(m->sync_range(8192, 4096));
  auto want_a = data;
  std::copy(a.begin(), a.end(), want_a.begin() + 8192);
  EXPECT_EQ(contents(*remote), want_a);  // chunk 25 still only in the cache
  EXPECT_EQ(m->progress().dirty, 1u);
  ASSERT_TRUE(m->sync());
  auto want_ab = want_a;
  std::copy(b.begin(), b.end(), want_ab.begin() + 102400);
  EXPECT_EQ(contents(*remote), want_ab);
  EXPECT_EQ(m->progress().dirty, 0u);
}

// Reads may take the cache's bytes directly (sendfile), after the range was
// fetched; writes may not (they must be marked dirty).
TEST(ManagedStore, DirectRangeIsForReadsAndFetchesFirst) {
  auto data = pattern(256 * 1024, 17);
  auto remote = mem_with(data);
  auto cache = *MemStore::create(data.size());
  auto m = *ManagedStore::open(remote, remote, cache, small(0, 1));
  Store::DirectRange d;
  EXPECT_FALSE(m->direct_range(4096, 8192, Store::Access::kWrite, d));
  ASSERT_TRUE(m->direct_range(4096, 8192, Store::Access::kRead, d));
  ASSERT_NE(d.memory, nullptr);
  EXPECT_TRUE(std::equal(d.memory, d.memory + 8192, data.begin() + 4096));
  EXPECT_EQ(m->progress().present, 2u);
}

TEST(ManagedStore, QuickWhereEveryChunkIsLocal) {
  // chunk 4K (small()): the NBD server batches only requests on local chunks.
  auto data = pattern(64 * 1024, 5);
  auto remote = mem_with(data);
  auto cache = *MemStore::create(data.size());
  auto m = *ManagedStore::open(remote, remote, cache, small(0, 1));
  EXPECT_FALSE(m->quick(0, 4096));
  std::vector<std::byte> got(4096);
  ASSERT_TRUE(m->read_at(got, 4096));
  EXPECT_TRUE(m->quick(4096, 4096));
  EXPECT_FALSE(m->quick(4096, 8192));  // the next chunk is still remote
  EXPECT_TRUE(m->quick(0, 0));
}

TEST(ManagedStore, PushWorkersPushOnTheirInterval) {
  auto remote = *MemStore::create(64 * 1024);
  auto counted = std::make_shared<Faulty>(remote);
  auto cache = *MemStore::create(64 * 1024);
  auto m = *ManagedStore::open(counted, counted, cache, small(1, 1, 20ms));
  auto patch = pattern(8192, 6);
  ASSERT_TRUE(m->write_at(patch, 4096));
  for (int i = 0; i < 1000 && counted->writes == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_GT(counted->writes.load(), 0);  // pushed without any sync()
  m.reset();                             // no pusher runs while we look
  std::vector<std::byte> got(8192);
  ASSERT_TRUE(remote->read_at(got, 4096));
  EXPECT_EQ(got, patch);
}

TEST(ManagedStore, WithoutPushWorkersWritesStayLocal) {
  auto remote = *MemStore::create(64 * 1024);
  auto cache = *MemStore::create(64 * 1024);
  auto m = *ManagedStore::open(remote, remote, cache, small(0, 0));
  ASSERT_TRUE(m->write_at(pattern(4096, 7), 0));
  ASSERT_TRUE(m->sync());
  EXPECT_EQ(contents(*remote), std::vector<std::byte>(64 * 1024));
}

TEST(ManagedStore, RemoteErrorsReachTheCallerAndFailedPushesStayDirty) {
  auto remote = *MemStore::create(64 * 1024);
  auto faulty = std::make_shared<Faulty>(remote);
  auto cache = *MemStore::create(64 * 1024);
  auto m = *ManagedStore::open(faulty, faulty, cache, small(0, 1));
  faulty->fail_reads = true;
  std::vector<std::byte> got(4096);
  Status st = m->read_at(got, 0);
  EXPECT_EQ(st.code(), EIO) << st.message();
  faulty->fail_reads = false;
  ASSERT_TRUE(m->read_at(got, 0));  // the chunk was released, not stuck

  auto patch = pattern(4096, 8);
  ASSERT_TRUE(m->write_at(patch, 8192));
  faulty->fail_writes = true;
  st = m->sync();
  EXPECT_EQ(st.code(), ENOSPC) << st.message();
  EXPECT_EQ(m->progress().dirty, 1u);  // still owed to the remote
  faulty->fail_writes = false;
  ASSERT_TRUE(m->sync());
  ASSERT_TRUE(remote->read_at(got, 8192));
  EXPECT_EQ(got, patch);
}

TEST(ManagedStore, ManyThreadsWithPullsAndPushesAgreeWithAModel) {
  constexpr size_t kSize = 2 << 20;
  auto initial = pattern(kSize, 9);
  auto remote = mem_with(initial);
  auto cache = *MemStore::create(kSize);
  auto m = *ManagedStore::open(remote, remote, cache, small(3, 2, 5ms));
  // Eight threads, each owning an unaligned slice, so chunks are shared
  // between threads at the slice edges.
  constexpr size_t kSlice = kSize / 8 - 1234;
  std::vector<std::vector<std::byte>> model(8);
  std::vector<std::jthread> threads;
  std::atomic<bool> bad{false};
  for (unsigned t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      size_t base = t * (kSize / 8) + 617;
      auto& mine = model[t];
      mine.assign(initial.begin() + base, initial.begin() + base + kSlice);
      std::mt19937 rng(t);
      for (int i = 0; i < 300 && !bad; ++i) {
        size_t len = 1 + rng() % 20000, at = rng() % (kSlice - len);
        if (rng() % 2) {
          auto bytes = pattern(len, rng());
          if (!m->write_at(bytes, base + at)) bad = true;
          std::copy(bytes.begin(), bytes.end(), mine.begin() + at);
        } else {
          std::vector<std::byte> got(len);
          if (!m->read_at(got, base + at) || !std::equal(got.begin(), got.end(), mine.begin() + at)) {
            ADD_FAILURE() << "thread " << t << ": read at " << base + at << " differs";
            bad = true;
          }
        }
        if (i % 100 == 99 && !m->sync()) bad = true;
      }
    });
  }
  threads.clear();
  ASSERT_FALSE(bad);
  ASSERT_TRUE(m->sync());
  auto want = initial;
  for (unsigned t = 0; t < 8; ++t) std::copy(model[t].begin(), model[t].end(), want.begin() + t * (kSize / 8) + 617);
  EXPECT_EQ(contents(*remote), want);
  EXPECT_EQ(contents(*m), want);
}

// A store whose reads of one range fail until cured.
class BadRange final : public StoreWrapper {
 public:
  BadRange(std::shared_ptr<Store> inner, uint64_t begin, uint64_t end)
      : StoreWrapper(std::move(inner)), begin_(begin), end_(end) {}
  Status read_at(std::span<std::byte> b, uint64_t o) override {
    if (!cured && o < end_ && o + b.size() > begin_) return Status::error(EIO, "bad range");
    return StoreWrapper::read_at(b, o);
  }
  std::atomic<bool> cured{false};

 private:
  uint64_t begin_, end_;
};

TEST(ManagedStore, AChunkThatCannotBeFetchedDoesNotStopTheOthers) {
  auto data = pattern(1 << 20, 10);
  auto remote = mem_with(data);
  auto bad = std::make_shared<BadRange>(remote, 8192, 8193);  // chunk 2 only
  auto cache = *MemStore::create(1 << 20);
  ManagedOptions o = small(4, 0);
  o.max_batch = 4096;  // one chunk per pull, so only chunk 2 fails
  auto m = *ManagedStore::open(bad, bad, cache, o);
  for (int i = 0; i < 1000 && m->progress().present < 255; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(m->progress().present, 255u);  // everything but the bad chunk
  bad->cured = true;
  ASSERT_TRUE(m->wait_pulled(30s));  // a later pass takes it
  EXPECT_EQ(contents(*cache), data);
}

TEST(ManagedStore, AFailedEdgeFetchReleasesEveryChunkTheWriteClaimed) {
  auto data = pattern(64 * 1024, 11);
  auto remote = mem_with(data);
  auto bad = std::make_shared<BadRange>(remote, 0, 4096);  // chunk 0
  auto cache = *MemStore::create(64 * 1024);
  auto m = *ManagedStore::open(bad, bad, cache, small(0, 0));
  // Parts of chunks 0 and 1, both missing: chunk 0's fetch fails.
  auto patch = pattern(200, 12);
  EXPECT_EQ(m->write_at(patch, 4000).code(), EIO);
  std::vector<std::byte> got(4096);
  ASSERT_TRUE(m->read_at(got, 4096));  // chunk 1 was given back, not left claimed
  EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + 4096));
  bad->cured = true;
  ASSERT_TRUE(m->read_at(got, 0));
  EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin()));
}

TEST(ManagedStore, RefusesBadOptionsAndASmallCache) {
  auto remote = *MemStore::create(1 << 20);
  auto cache = *MemStore::create(1 << 19);
  EXPECT_FALSE(ManagedStore::open(remote, remote, cache, small(0, 0)));
  ManagedOptions o = small(0, 0);
  o.chunk_size = 3000;
  EXPECT_FALSE(check_managed_options(o));
  o.chunk_size = 4096;
  o.max_batch = 1024;
  EXPECT_FALSE(check_managed_options(o));
  o.max_batch = 1 << 20;
  o.push_workers = 1;
  o.push_interval = 0ms;
  EXPECT_FALSE(check_managed_options(o));
}

}  // namespace
