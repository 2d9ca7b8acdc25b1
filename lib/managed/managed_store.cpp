#include "managed/managed_store.hpp"

#include <algorithm>
#include <optional>
#include <utility>

#include "util/byte_buffer.hpp"
#include "util/log.hpp"
#include "util/units.hpp"

namespace memsync {

namespace {
constexpr uint8_t kPresent = 1;   // the cache holds the chunk's bytes
constexpr uint8_t kFetching = 2;  // claimed: someone is filling it in
constexpr uint8_t kDirty = 4;     // written locally, not yet pushed
constexpr uint8_t kPushing = 8;   // a pusher is sending it

constexpr auto kFirstRetry = std::chrono::milliseconds(100);
// Pulls start this large and double with every one that succeeds, up to
// max_batch (like the kernel's readahead window): a fresh mount's first
// reads, which an application starting up waits for, then compete with
// 16 x 256 KiB in flight instead of 16 x 4 MiB, and the pulls reach full
// size within about one round trip.
constexpr uint64_t kFirstPullBytes = 256 * 1024;
constexpr auto kMaxRetry = std::chrono::seconds(5);
}  // namespace

// Pushes that one sync() waits for; `remaining` and `error` guarded by mu_.
struct ManagedStore::Batch {
  Run run;
  struct Latch {
    uint64_t remaining = 0;
    Status error;
  };
  std::shared_ptr<Latch> latch;  // null for timer rounds
};

Status check_managed_options(const ManagedOptions& o) {
  auto pow2 = [](uint64_t v) { return v && !(v & (v - 1)); };
  if (!pow2(o.chunk_size) || o.chunk_size < 512 || o.chunk_size > (64u << 20))
    return Status::invalid("chunk size must be a power of two from 512 to 64M, not " + std::to_string(o.chunk_size));
  if (o.max_batch < o.chunk_size) return Status::invalid("the largest request must hold at least one chunk");
  if (o.pull_workers > 1024 || o.push_workers > 1024) return Status::invalid("at most 1024 workers");
  if (o.push_workers > 0 && o.push_interval.count() <= 0) return Status::invalid("the push interval must be positive");
  return Status::ok();
}

Result<std::shared_ptr<ManagedStore>> ManagedStore::open(std::shared_ptr<Store> remote, std::shared_ptr<Store> urgent,
                                                         std::shared_ptr<Store> cache, const ManagedOptions& o) {
  MEMSYNC_TRY(check_managed_options(o));
  if (cache->size() < remote->size())
    return Status::invalid("the cache (" + cache->describe() + ", " + format_size(cache->size()) +
                           ") is smaller than the remote store (" + format_size(remote->size()) + ")");
  if (cache->is_read_only()) return Status::invalid("the cache " + cache->describe() + " is read-only");
  std::shared_ptr<ManagedStore> s(new ManagedStore());
  s->remote_ = std::move(remote);
  s->urgent_ = urgent ? std::move(urgent) : s->remote_;
  s->cache_ = std::move(cache);
  s->opts_ = o;
  s->size_ = s->remote_->size();
  s->state_.assign(s->chunk_count(), 0);
  s->pull_window_ = std::max<uint64_t>(1, kFirstPullBytes / o.chunk_size);
  ManagedStore* self = s.get();
  for (unsigned i = 0; i < o.pull_workers; ++i) s->pullers_.emplace_back([self] { self->pull_loop(); });
  if (o.push_workers > 0 && !s->remote_->is_read_only()) {
    for (unsigned i = 0; i < o.push_workers; ++i) s->pushers_.emplace_back([self] { self->push_loop(); });
    s->push_timer_ = std::jthread([self] { self->schedule_pushes(); });
  }
  return s;
}

ManagedStore::~ManagedStore() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (dirty_ > 0 && !pushers_.empty())
      log::warn(describe() + ": " + std::to_string(dirty_) + " chunks written but never pushed");
  }
  changed_.notify_all();
  pullers_cv_.notify_all();
  work_.notify_all();
  push_timer_ = {};
  pullers_.clear();
  pushers_.clear();
}

std::string ManagedStore::describe() const {
  return "managed " + remote_->describe() + " cached in " + cache_->describe() + " (chunk " +
         format_size(opts_.chunk_size) + ")";
}

void ManagedStore::interrupt() {
  remote_->interrupt();
  if (urgent_ != remote_) urgent_->interrupt();
}

uint64_t ManagedStore::run_bytes(const Run& r) const {
  uint64_t begin = chunk_offset(r.first);
  return std::min(size_, chunk_offset(r.first + r.count)) - begin;
}

std::vector<ManagedStore::Run> ManagedStore::claim_missing(uint64_t first, uint64_t last, uint64_t max_chunks) {
  std::vector<Run> runs;
  for (uint64_t c = first; c <= last; ++c) {
    if (state_[c] & (kPresent | kFetching)) continue;
    state_[c] |= kFetching;
    if (!runs.empty() && runs.back().first + runs.back().count == c && runs.back().count < max_chunks)
      ++runs.back().count;
    else
      runs.push_back(Run{c, 1});
  }
  return runs;
}

bool ManagedStore::any_fetching(uint64_t first, uint64_t last) const {
  for (uint64_t c = first; c <= last; ++c)
    if (state_[c] & kFetching) return true;
  return false;
}

Status ManagedStore::fetch(Store& from, const Run& r) {
  const uint64_t offset = chunk_offset(r.first), length = run_bytes(r);
  Status st;
  DirectRange into;
  if (cache_->direct_range(offset, length, Access::kWrite, into)) {
    // Straight into the cache (its memory, or its file's page cache):
    // one copy from the socket instead of two through a buffer. Not
    // through a file's mapping: a cache's pages do not exist yet, and each
    // would cost a page fault and zeroing, where splice(2) allocates them
    // in the write path without either (front CPU per GiB pulled: 0.8 s
    // by splice, 1.2 s by the mapping, 1.25 s through a buffer; and 1.05
    // against 0.65 s by the mapping populated first with
    // MADV_POPULATE_WRITE, which still zeroes every page).
    into.write_memory = nullptr;
    // Fetches take turns writing into the file: the kernel serialises them
    // anyway (tmpfs holds the inode lock per write), but its waiters spin,
    // and on a busy VM that cost up to 2 s of CPU per GiB pulled.
    into.write_lock = &cache_write_mu_;
    st = from.read_into(into, offset, length);
  } else {
    ByteBuffer buf(length);
    st = from.read_at(buf, offset);
    if (st) st = cache_->write_at(buf, offset);
  }
  std::lock_guard lock(mu_);
  for (uint64_t c = r.first; c < r.first + r.count; ++c) {
    state_[c] &= static_cast<uint8_t>(~kFetching);
    if (st) {
      state_[c] |= kPresent;
      ++present_;
    }
  }
  if (!st) retry_from_ = std::min(retry_from_, r.first);  // the pullers' next pass
  settled(r);
  return st;
}

// Wake-ups go only to whom a change concerns. One condition for everyone
// woke every waiting reader (hundreds under nbdcopy) on every fetch, and
// the front server spent more CPU switching threads than moving bytes.
void ManagedStore::settled(const Run& r) {
  const uint64_t last = r.first + r.count - 1;
  for (RangeWaiter* w : range_waiters_)
    if (w->first <= last && r.first <= w->last) w->cv.notify_one();
  if (idle_pullers_ > 0) pullers_cv_.notify_all();
  if (present_ == chunk_count()) changed_.notify_all();  // wait_pulled
}

void ManagedStore::wait_fetches(std::unique_lock<std::mutex>& lock, uint64_t first, uint64_t last) {
  if (!any_fetching(first, last)) return;
  RangeWaiter me{first, last, {}};
  range_waiters_.push_back(&me);
  me.cv.wait(lock, [&] { return !any_fetching(first, last); });
  std::erase(range_waiters_, &me);
}

void ManagedStore::wait_pullers(std::unique_lock<std::mutex>& lock) {
  ++idle_pullers_;
  pullers_cv_.wait(lock);
  --idle_pullers_;
}

bool ManagedStore::is_streaming(uint64_t first, uint64_t end) {
  std::lock_guard lock(mu_);
  // "Near": within a few pull windows of the last fetch for a reader.
  const uint64_t near = 4ull * std::max(1u, opts_.pull_workers) * max_batch_chunks();
  // Several readers may stream at once (nbdcopy gives each connection its
  // own part of the disk): a read continues any of the last few.
  for (auto& e : recent_fetch_ends_) {
    if (e != UINT64_MAX && first + near >= e && first <= e + near) {
      e = std::max(e, end);
      return true;
    }
  }
  recent_fetch_ends_[next_recent_++ % recent_fetch_ends_.size()] = end;
  return false;
}

void ManagedStore::release(const Run& r) {
  for (uint64_t c = r.first; c < r.first + r.count; ++c) state_[c] &= static_cast<uint8_t>(~kFetching);
  retry_from_ = std::min(retry_from_, r.first);
  settled(r);
}

Status ManagedStore::make_present(uint64_t offset, uint64_t length) {
  if (length == 0) return Status::ok();
  const auto [first, last] = chunks_of(offset, length);
  // While a random read waits for chunks, most pullers start nothing new:
  // their replies would compete with this fetch for the CPU and the links.
  // A read that continues where the last fetched ones were (a sequential
  // copy, running ahead of the pulls) does not hold them back: there the
  // pulls help the reader.
  struct Urgent {
    ManagedStore& s;
    explicit Urgent(ManagedStore& st) : s(st) {
      std::lock_guard lock(s.mu_);
      ++s.urgent_waiting_;
    }
    ~Urgent() {
      std::lock_guard lock(s.mu_);
      --s.urgent_waiting_;
      if (s.idle_pullers_ > 0) s.pullers_cv_.notify_all();
    }
  };
  std::optional<Urgent> urgent;
  for (;;) {
    std::vector<Run> mine;
    {
      std::lock_guard lock(mu_);
      mine = claim_missing(first, last, UINT64_MAX);
    }
    if (!mine.empty() && !urgent && !is_streaming(mine.front().first, mine.back().first + mine.back().count))
      urgent.emplace(*this);
    for (size_t i = 0; i < mine.size(); ++i) {
      Status st = fetch(*urgent_, mine[i]);
      if (!st) {
        std::lock_guard lock(mu_);
        for (size_t j = i + 1; j < mine.size(); ++j) release(mine[j]);
        return st.with_context("fetch " + format_size(run_bytes(mine[i])) + " at " +
                               std::to_string(chunk_offset(mine[i].first)));
      }
    }
    std::unique_lock lock(mu_);
    wait_fetches(lock, first, last);
    if (all_present(first, last)) return Status::ok();
    // Someone else's fetch failed: claim what is still missing ourselves.
  }
}

Status ManagedStore::read_at(std::span<std::byte> buf, uint64_t offset) {
  MEMSYNC_TRY(make_present(offset, buf.size()));
  return cache_->read_at(buf, offset);
}

bool ManagedStore::direct_range(uint64_t offset, uint64_t length, Access access, DirectRange& out) {
  // Writes must come through write_at, which marks chunks dirty. A failed
  // fetch answers false: read_at then tries once more and reports the
  // error (after an outage timeout the remote fails new requests at once,
  // so the caller does not wait the timeout twice).
  if (access != Access::kRead || length == 0) return false;
  if (!make_present(offset, length)) return false;
  return cache_->direct_range(offset, length, access, out);
}

Status ManagedStore::prefetch(uint64_t offset, uint64_t length) { return make_present(offset, length); }

bool ManagedStore::all_present(uint64_t first, uint64_t last) const {
  for (uint64_t c = first; c <= last; ++c)
    if (!(state_[c] & kPresent)) return false;
  return true;
}

bool ManagedStore::quick(uint64_t offset, uint64_t length) {
  // Asked of requests not yet checked: out of range is answered with an
  // error at once.
  if (length == 0 || offset >= size_ || length > size_ - offset) return true;
  const auto [first, last] = chunks_of(offset, length);
  std::lock_guard lock(mu_);
  return all_present(first, last);
}

Status ManagedStore::write_at(std::span<const std::byte> buf, uint64_t offset) {
  if (buf.empty()) return Status::ok();
  if (is_read_only()) return Status::error(EROFS, describe() + " is read-only");
  const uint64_t end = offset + buf.size();
  const auto [first, last] = chunks_of(offset, buf.size());
  auto partly = [&](uint64_t c) { return offset > chunk_offset(c) || end < std::min(size_, chunk_offset(c + 1)); };
  std::vector<uint64_t> owned;  // missing chunks this write replaces whole
  std::vector<Run> edges;       // missing chunks it changes only in part
  {
    std::unique_lock lock(mu_);
    // A fetch landing after our write would undo it: let fetches finish.
    wait_fetches(lock, first, last);
    for (uint64_t c = first; c <= last; ++c) {
      if (state_[c] & kPresent) continue;
      state_[c] |= kFetching;
      if (partly(c)) edges.push_back(Run{c, 1});
      else owned.push_back(c);
    }
  }
  // On failure every chunk still claimed goes back to missing: the owned
  // ones, and the edges not fetched yet (fetch() settles its own).
  auto release_rest = [&](size_t first_edge) {
    std::lock_guard lock(mu_);
    for (uint64_t c : owned) release(Run{c, 1});
    for (size_t i = first_edge; i < edges.size(); ++i) release(edges[i]);
  };
  for (size_t i = 0; i < edges.size(); ++i) {
    if (Status st = fetch(*urgent_, edges[i]); !st) {
      release_rest(i + 1);
      return st.with_context("fetch the chunk around a partial write");
    }
  }
  if (Status st = cache_->write_at(buf, offset); !st) {
    release_rest(edges.size());
    return st;
  }
  std::lock_guard lock(mu_);
  for (uint64_t c : owned) {
    state_[c] = static_cast<uint8_t>((state_[c] & ~kFetching) | kPresent);
    ++present_;
  }
  for (uint64_t c = first; c <= last; ++c) {
    if (!(state_[c] & kDirty)) ++dirty_;
    state_[c] |= kDirty;
  }
  if (!owned.empty()) settled(Run{first, last - first + 1});  // they were claimed (fetching)
  return Status::ok();
}

void ManagedStore::pull_loop() {
  const uint64_t n = chunk_count();
  const uint64_t most = max_batch_chunks();
  auto retry = std::chrono::milliseconds(kFirstRetry);
  for (;;) {
    Run r;
    {
      std::unique_lock lock(mu_);
      for (;;) {
        if (stopping_ || present_ == n) return;
        // A random read is waiting: at most a quarter of the pullers go on.
        const unsigned few = std::max(1u, opts_.pull_workers / 4);
        if (urgent_waiting_ > 0 && active_pulls_ >= few) {
          wait_pullers(lock);
          continue;
        }
        while (pull_cursor_ < n && (state_[pull_cursor_] & (kPresent | kFetching))) ++pull_cursor_;
        if (pull_cursor_ < n) break;
        if (retry_from_ < n) {
          // The end of a pass with failures behind us: after a pause, one
          // more pass from the first chunk that failed. (Not at once: a
          // chunk the remote cannot give must not stop the rest, nor spin.)
          pullers_cv_.wait_for(lock, retry, [&] { return stopping_; });
          retry = std::min<std::chrono::milliseconds>(retry * 2, kMaxRetry);
          pull_cursor_ = std::exchange(retry_from_, n);
          continue;
        }
        // Nothing left to claim, but fetches by others are still running
        // (and may fail, leaving a retry mark).
        wait_pullers(lock);
      }
      const uint64_t batch = std::min(most, pull_window_);
      auto runs = claim_missing(pull_cursor_, std::min(n - 1, pull_cursor_ + batch - 1), batch);
      r = runs.front();  // the cursor's chunk is missing, so there is one
      for (size_t i = 1; i < runs.size(); ++i)  // only the first run is ours
        for (uint64_t c = runs[i].first; c < runs[i].first + runs[i].count; ++c)
          state_[c] &= static_cast<uint8_t>(~kFetching);
      pull_cursor_ = r.first + r.count;
      ++active_pulls_;
    }
    Status st = fetch(*remote_, r);
    std::lock_guard lock(mu_);
    --active_pulls_;
    if (urgent_waiting_ > 0 && idle_pullers_ > 0) pullers_cv_.notify_all();  // one may start
    if (st) {
      retry = kFirstRetry;
      pull_window_ = std::min(most, pull_window_ * 2);
      if (pull_failing_) {
        pull_failing_ = false;
        log::warn(describe() + ": background pulls work again");
      }
      if (present_ == n && !announced_) {
        announced_ = true;
        log::info(describe() + ": every chunk is local");
      }
    } else if (!pull_failing_) {
      // Once per streak of failures, not once per chunk and worker.
      pull_failing_ = true;
      log::warn(describe() + ": background pull failed (the chunks are retried later; reads fetch what they need): " +
                st.message());
    }
  }
}

std::vector<ManagedStore::Run> ManagedStore::claim_dirty(uint64_t first, uint64_t last) {
  const uint64_t batch = max_batch_chunks();
  std::vector<Run> runs;
  for (uint64_t c = first; c <= last; ++c) {
    if ((state_[c] & (kDirty | kPushing)) != kDirty) continue;
    state_[c] = static_cast<uint8_t>((state_[c] & ~kDirty) | kPushing);
    --dirty_;
    if (!runs.empty() && runs.back().first + runs.back().count == c && runs.back().count < batch)
      ++runs.back().count;
    else
      runs.push_back(Run{c, 1});
  }
  return runs;
}

Status ManagedStore::push(const Run& r) {
  ByteBuffer buf(run_bytes(r));
  Status st = cache_->read_at(buf, chunk_offset(r.first));
  if (st) st = remote_->write_at(buf, chunk_offset(r.first));
  if (st) unsynced_ = true;
  std::lock_guard lock(mu_);
  for (uint64_t c = r.first; c < r.first + r.count; ++c) {
    state_[c] &= static_cast<uint8_t>(~kPushing);
    if (!st && !(state_[c] & kDirty)) {
      state_[c] |= kDirty;  // the next round tries again
      ++dirty_;
    }
  }
  changed_.notify_all();
  return st;
}

void ManagedStore::push_loop() {
  for (;;) {
    std::shared_ptr<Batch> b;
    {
      std::unique_lock lock(mu_);
      work_.wait(lock, [&] { return stopping_ || !push_queue_.empty(); });
      if (push_queue_.empty()) return;  // stopping
      b = std::move(push_queue_.front());
      push_queue_.pop_front();
    }
    Status st = push(b->run);
    {
      std::lock_guard lock(mu_);
      if (!st && !push_failing_) log::warn(describe() + ": push failed (the chunks stay dirty and go again): " + st.message());
      else if (st && push_failing_) log::warn(describe() + ": pushes work again");
      push_failing_ = !st;
    }
    if (b->latch) {
      std::lock_guard lock(mu_);
      if (!st && b->latch->error) b->latch->error = st;
      --b->latch->remaining;
      changed_.notify_all();
    }
  }
}

void ManagedStore::schedule_pushes() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    changed_.wait_for(lock, opts_.push_interval, [&] { return stopping_; });
    if (stopping_ || dirty_ == 0) continue;
    for (auto& r : claim_dirty(0, chunk_count() - 1)) push_queue_.push_back(std::make_shared<Batch>(Batch{r, nullptr}));
    work_.notify_all();
  }
}

// REQUIRES: the runs are claimed (kPushing). Hands them to the push
// workers and waits for all of them.
Status ManagedStore::push_runs(std::vector<Run> runs) {
  auto latch = std::make_shared<Batch::Latch>();
  std::unique_lock lock(mu_);
  latch->remaining = runs.size();
  for (auto& r : runs) push_queue_.push_back(std::make_shared<Batch>(Batch{r, latch}));
  work_.notify_all();
  changed_.wait(lock, [&] { return latch->remaining == 0; });
  return latch->error;
}

Status ManagedStore::sync() { return sync_chunks(0, chunk_count() - 1); }

Status ManagedStore::sync_range(uint64_t offset, uint64_t length) {
  if (length == 0) return Status::ok();
  if (pushers_.empty()) return cache_->sync_range(offset, length);
  const auto [first, last] = chunks_of(offset, length);
  return sync_chunks(first, last);
}

Status ManagedStore::sync_chunks(uint64_t first, uint64_t last) {
  if (pushers_.empty()) return cache_->sync();  // writes stay local
  std::vector<uint64_t> busy;  // being pushed already: not known to be on the remote yet
  std::vector<Run> runs;
  {
    std::lock_guard lock(mu_);
    for (uint64_t c = first; c <= last; ++c)
      if (state_[c] & kPushing) busy.push_back(c);
    if (dirty_ > 0) runs = claim_dirty(first, last);
  }
  Status st = runs.empty() ? Status::ok() : push_runs(std::move(runs));
  if (!busy.empty()) {
    // Their pushes started before this sync: wait for them; a chunk that is
    // dirty afterwards (written meanwhile, or its push failed) goes again.
    std::vector<Run> again;
    {
      std::unique_lock lock(mu_);
      changed_.wait(lock, [&] {
        return stopping_ || std::none_of(busy.begin(), busy.end(), [&](uint64_t c) { return state_[c] & kPushing; });
      });
      for (uint64_t c : busy)
        for (auto& r : claim_dirty(c, c)) again.push_back(r);
    }
    if (!again.empty()) {
      Status st2 = push_runs(std::move(again));
      if (st) st = st2;
    }
  }
  if (!st) return st.with_context("push dirty chunks to " + remote_->describe());
  // Nothing pushed since the last remote sync: nothing to make durable (and
  // a shutdown with the remote gone need not wait for it).
  if (!unsynced_.exchange(false)) return Status::ok();
  st = remote_->sync();
  if (!st) unsynced_ = true;
  return st;
}

ManagedStore::Progress ManagedStore::progress() {
  std::lock_guard lock(mu_);
  return Progress{chunk_count(), present_, dirty_};
}

bool ManagedStore::wait_pulled(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return present_ == chunk_count(); });
}

}  // namespace memsync
