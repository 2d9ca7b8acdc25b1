// ManagedStore: the "managed mount". A local store (the cache) stands in
// for a remote one, hiding the network's latency from the NBD client:
//
//  - Background pull workers copy every chunk from the remote into the
//    cache, in priority order (sequential), several adjacent chunks per
//    request (up to max_batch bytes).
//  - A read of chunks not yet local fetches them at once through `urgent`,
//    a second connection to the same remote, so it never waits behind the
//    background transfer's bytes (memsync-wire(7), Urgency).
//  - Writes land in the cache and mark their chunks dirty; push workers
//    send dirty chunks to the remote every push_interval, coalesced.
//  - sync() (NBD FLUSH) pushes everything that was dirty when it was
//    called, then syncs the remote: after it returns, the remote has every
//    write completed before the call. sync_range() (a FUA write) does the
//    same for the written range's chunks only.
//
// Chunk states: missing, fetching (claimed by one puller or by a request
// that needs it), present; a present chunk may also be dirty and/or being
// pushed. A write waits for a fetch of the same chunk (the fetched bytes
// must not land on top of newer ones); a chunk being pushed is not pushed
// again at the same time (an older copy must not arrive last). A write
// that covers part of a missing chunk fetches the chunk first.
//
// The cache is scratch: at start every chunk is missing and whatever the
// cache held is overwritten as chunks arrive.
// With 0 pull workers only what is read is fetched; with 0 push workers
// writes stay in the cache (sync() then only syncs the cache).
// Failed pulls are retried with backoff; a failed push leaves its chunks
// dirty (the next round tries again) and fails the sync() that needed it.
// Remote errors on a read reach the caller (the NBD client sees EIO).
//
// Thread safety: all methods from any thread.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/store.hpp"

namespace memsync {

struct ManagedOptions {
  uint32_t chunk_size = 64 * 1024;  // tracking unit, a power of two >= 512
  unsigned pull_workers = 16;       // 0: fetch on demand only
  unsigned push_workers = 16;       // 0: writes stay local
  std::chrono::milliseconds push_interval{1000};
  uint32_t max_batch = 4 << 20;     // largest coalesced request, bytes
};

// Checks options (usage errors for tools): chunk size, batch >= chunk.
Status check_managed_options(const ManagedOptions& o);

class ManagedStore final : public Store {
 public:
  // `urgent` may be `remote` itself (a local remote has no queue to skip).
  // REQUIRES: cache->size() >= remote->size().
  static Result<std::shared_ptr<ManagedStore>> open(std::shared_ptr<Store> remote, std::shared_ptr<Store> urgent,
                                                    std::shared_ptr<Store> cache, const ManagedOptions& o);
  // Stops the workers. Dirty chunks are NOT pushed: call sync() first.
  ~ManagedStore() override;

  uint64_t size() const override { return size_; }
  Status read_at(std::span<std::byte> buf, uint64_t offset) override;
  Status write_at(std::span<const std::byte> buf, uint64_t offset) override;
  // Pushes every dirty chunk (and waits for pushes under way), then syncs
  // the remote if anything was pushed since its last sync.
  Status sync() override;
  // The same for the chunks of the range only (NBD FUA: a writethrough
  // client does not push the whole mount on every write).
  Status sync_range(uint64_t offset, uint64_t length) override;
  // kRead only: the cache's bytes (sendfile from its file), once the range
  // is local (fetched now if it is not). Writes go through write_at.
  bool direct_range(uint64_t offset, uint64_t length, Access access, DirectRange& out) override;
  // NBD CACHE: fetches the range now (urgently) if it is not local yet.
  Status prefetch(uint64_t offset, uint64_t length) override;
  // Quick where every chunk of the range is local.
  bool quick(uint64_t offset, uint64_t length) override;
  bool is_read_only() const override { return remote_->is_read_only(); }
  bool can_multi_conn() const override { return true; }  // one state, sync covers all
  std::string describe() const override;
  void interrupt() override;

  struct Progress {
    uint64_t chunks = 0, present = 0, dirty = 0;
  };
  Progress progress();
  // Waits until every chunk is local (for tests and `--wait-pulled`-like
  // uses); false on timeout.
  bool wait_pulled(std::chrono::milliseconds timeout);

 private:
  struct Run {
    uint64_t first = 0, count = 0;
  };
  struct Batch;
  ManagedStore() = default;

  uint64_t chunk_count() const { return (size_ + opts_.chunk_size - 1) / opts_.chunk_size; }
  uint64_t chunk_offset(uint64_t c) const { return c * opts_.chunk_size; }
  // The chunks [first, last] under [offset, offset+length); length > 0.
  struct ChunkSpan {
    uint64_t first, last;
  };
  ChunkSpan chunks_of(uint64_t offset, uint64_t length) const {
    return {offset / opts_.chunk_size, (offset + length - 1) / opts_.chunk_size};
  }
  // The most chunks one pull or push moves (--max-batch).
  uint64_t max_batch_chunks() const { return std::max<uint64_t>(1, opts_.max_batch / opts_.chunk_size); }
  bool all_present(uint64_t first, uint64_t last) const;  // REQUIRES mu_
  uint64_t run_bytes(const Run& r) const;
  // Claims the missing chunks of [first, last] for the caller (marks them
  // fetching). REQUIRES mu_.
  std::vector<Run> claim_missing(uint64_t first, uint64_t last, uint64_t max_chunks);
  bool any_fetching(uint64_t first, uint64_t last) const;  // REQUIRES mu_
  // True when a read's missing chunks [first, end) continue where a recent
  // read's ended (a sequential reader); remembers them for later calls.
  bool is_streaming(uint64_t first, uint64_t end);
  // Gives claimed chunks back (missing again, for the pullers' next pass).
  // REQUIRES mu_.
  void release(const Run& r);
  // A claimed run stopped fetching (present now, or missing again): wakes
  // the waiters it concerns. REQUIRES mu_.
  void settled(const Run& r);
  // Waits until no chunk of [first, last] is being fetched. REQUIRES lock on mu_.
  void wait_fetches(std::unique_lock<std::mutex>& lock, uint64_t first, uint64_t last);
  // A puller with nothing to start waits here until woken (callers re-check).
  void wait_pullers(std::unique_lock<std::mutex>& lock);
  // Copies a claimed run from `from` into the cache, then marks it present
  // (or missing again on failure).
  Status fetch(Store& from, const Run& r);
  // Fetches the missing chunks under [offset, offset+length) urgently and
  // waits for those others are fetching; returns when all are present.
  Status make_present(uint64_t offset, uint64_t length);
  void pull_loop();
  // Claims dirty chunks (not being pushed) of [first, last] as runs.
  // REQUIRES mu_.
  std::vector<Run> claim_dirty(uint64_t first, uint64_t last);
  Status push(const Run& r);
  void push_loop();
  void schedule_pushes();
  Status push_runs(std::vector<Run> runs);
  Status sync_chunks(uint64_t first, uint64_t last);

  std::shared_ptr<Store> remote_, urgent_, cache_;
  ManagedOptions opts_;
  uint64_t size_ = 0;

  // A reader or writer waiting for fetches in [first, last]; on its stack.
  struct RangeWaiter {
    uint64_t first, last;
    std::condition_variable cv;
  };

  std::mutex cache_write_mu_;  // fetches' writes into a file cache take turns
  std::mutex mu_;
  std::condition_variable changed_;  // pushes finished, or every chunk is local
  std::condition_variable pullers_cv_;           // work for an idle puller, or stop
  std::vector<RangeWaiter*> range_waiters_;      // guarded by mu_
  unsigned idle_pullers_ = 0;                    // guarded by mu_: waiting on pullers_cv_
  std::vector<uint8_t> state_;       // guarded by mu_: kPresent | kFetching | kDirty | kPushing
  uint64_t present_ = 0, dirty_ = 0; // guarded by mu_
  uint64_t pull_cursor_ = 0;         // guarded by mu_: where this pass of the pullers is
  uint64_t pull_window_ = 1;         // guarded by mu_: chunks per pull now (grows to max_batch)
  uint64_t retry_from_ = UINT64_MAX; // guarded by mu_: first chunk a fetch gave back (next pass)
  bool pull_failing_ = false;        // guarded by mu_: logged, until a pull works again
  bool push_failing_ = false;        // guarded by mu_: likewise for pushes
  std::atomic<bool> unsynced_{false};  // pushed since the remote's last sync
  bool stopping_ = false;            // guarded by mu_
  bool announced_ = false;           // guarded by mu_: "every chunk is local" logged
  unsigned urgent_waiting_ = 0;      // guarded by mu_: random reads fetching now; pullers hold back
  unsigned active_pulls_ = 0;        // guarded by mu_: pulls in flight
  // guarded by mu_: where recent reads' fetched chunks ended (streams).
  std::array<uint64_t, 8> recent_fetch_ends_{UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX,
                                             UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
  size_t next_recent_ = 0;

  std::condition_variable work_;     // push jobs queued, or a push round is due
  std::deque<std::shared_ptr<Batch>> push_queue_;  // guarded by mu_

  std::vector<std::jthread> pullers_, pushers_;
  std::jthread push_timer_;
};

}  // namespace memsync
