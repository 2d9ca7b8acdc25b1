#include "backend/dir_store.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "util/units.hpp"

namespace memsync {
namespace {
constexpr const char* kMetaFile = ".memsync-dir";
constexpr uint64_t kDefaultChunk = 64 * 1024;
}  // namespace

Result<std::shared_ptr<DirStore>> DirStore::open(const std::string& path, const DirStoreOptions& opts) {
  std::shared_ptr<DirStore> s(new DirStore());
  s->path_ = path;
  s->read_only_ = opts.read_only;
  s->max_open_ = std::max<size_t>(1, opts.max_open);
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return Status::from_errno("create directory " + path);
  int dfd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Status::from_errno("open directory " + path);
  s->dir_fd_.reset(dfd);

  const std::string meta = path + "/" + kMetaFile;
  std::ifstream in(meta);
  if (in) {
    uint64_t rsize = 0, rchunk = 0;
    std::string k1, k2;
    in >> k1 >> rsize >> k2 >> rchunk;
    if (k1 != "size" || k2 != "chunk" || rchunk == 0)
      return Status::invalid(meta + " is not a memsync dir: geometry file");
    if (opts.size && *opts.size != rsize)
      return Status::invalid(path + " was created with size=" + std::to_string(rsize) + ", not " +
                             std::to_string(*opts.size));
    if (opts.chunk && *opts.chunk != rchunk)
      return Status::invalid(path + " was created with chunk=" + std::to_string(rchunk) + ", not " +
                             std::to_string(*opts.chunk));
    s->size_ = rsize;
    s->chunk_ = rchunk;
  } else {
    if (!opts.size) return Status::invalid("dir:" + path + " needs ?size=SIZE (it records no geometry yet)");
    s->size_ = *opts.size;
    s->chunk_ = opts.chunk.value_or(kDefaultChunk);
    if (s->chunk_ == 0) return Status::invalid("dir: chunk size must be positive");
    if (opts.read_only) return Status::invalid("dir:" + path + " has no geometry file and is opened read-only");
    std::ofstream out(meta);
    out << "size " << s->size_ << "\nchunk " << s->chunk_ << "\n";
    out.close();
    if (!out) return Status::from_errno("write " + meta);
  }
  return s;
}

std::string DirStore::chunk_path(uint64_t index) const {
  char name[24];
  std::snprintf(name, sizeof name, "%016" PRIx64, index);
  return name;
}

size_t DirStore::open_files() const {
  std::lock_guard lock(mu_);
  return open_.size();
}

Result<std::shared_ptr<UniqueFd>> DirStore::chunk_file(uint64_t index, bool create) {
  {
    std::lock_guard lock(mu_);
    auto it = open_.find(index);
    if (it != open_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.pos);
      return it->second.fd;
    }
  }
  int flags = (read_only_ ? O_RDONLY : O_RDWR) | O_CLOEXEC | (create ? O_CREAT : 0);
  int fd = ::openat(dir_fd_.get(), chunk_path(index).c_str(), flags, 0644);
  if (fd < 0) {
    if (errno == ENOENT && !create) return std::shared_ptr<UniqueFd>();
    return Status::from_errno("open chunk " + chunk_path(index) + " in " + path_);
  }
  auto file = std::make_shared<UniqueFd>(fd);
  std::lock_guard lock(mu_);
  if (create) dir_dirty_ = true;
  auto it = open_.find(index);
  if (it != open_.end()) return it->second.fd;  // another thread won the race
  lru_.push_front(index);
  open_[index] = Entry{file, lru_.begin()};
  while (open_.size() > max_open_) {
    // Dropping our reference closes the file once its last user is done.
    open_.erase(lru_.back());
    lru_.pop_back();
  }
  return file;
}

void DirStore::forget(uint64_t index) {
  std::lock_guard lock(mu_);
  auto it = open_.find(index);
  if (it == open_.end()) return;
  lru_.erase(it->second.pos);
  open_.erase(it);
}

template <class Fn>
Status DirStore::for_each_chunk(uint64_t offset, uint64_t length, Fn&& fn) {
  if (offset > size_ || length > size_ - offset) return Status::invalid("request beyond the end of " + describe());
  uint64_t done = 0;
  while (done < length) {
    uint64_t pos = offset + done;
    uint64_t index = pos / chunk_, in = pos % chunk_;
    uint64_t n = std::min(length - done, chunk_ - in);
    MEMSYNC_TRY(fn(index, in, n, done));
    done += n;
  }
  return Status::ok();
}

Status DirStore::read_at(std::span<std::byte> buf, uint64_t offset) {
  return for_each_chunk(offset, buf.size(), [&](uint64_t index, uint64_t in, uint64_t n, uint64_t at) -> Status {
    auto file = chunk_file(index, false);
    if (!file) return file.status();
    std::byte* dst = buf.data() + at;
    if (!*file) {
      std::memset(dst, 0, n);
      return Status::ok();
    }
    uint64_t got = 0;
    while (got < n) {
      ssize_t r = ::pread((*file)->get(), dst + got, n - got, static_cast<off_t>(in + got));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::from_errno("read chunk " + chunk_path(index) + " in " + path_);
      }
      if (r == 0) break;  // short chunk file: the rest reads as zeros
      got += static_cast<uint64_t>(r);
    }
    std::memset(dst + got, 0, n - got);
    return Status::ok();
  });
}

Status DirStore::write_at(std::span<const std::byte> buf, uint64_t offset) {
  if (read_only_) return Status::error(EPERM, describe() + " is read-only");
  return for_each_chunk(offset, buf.size(), [&](uint64_t index, uint64_t in, uint64_t n, uint64_t at) -> Status {
    auto file = chunk_file(index, true);
    if (!file) return file.status();
    uint64_t put = 0;
    while (put < n) {
      ssize_t r = ::pwrite((*file)->get(), buf.data() + at + put, n - put, static_cast<off_t>(in + put));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::from_errno("write chunk " + chunk_path(index) + " in " + path_);
      }
      put += static_cast<uint64_t>(r);
    }
    std::lock_guard lock(mu_);
    dirty_.insert(index);
    return Status::ok();
  });
}

Status DirStore::sync() {
  if (read_only_) return Status::ok();
  std::set<uint64_t> dirty;
  bool dir_dirty;
  {
    std::lock_guard lock(mu_);
    dirty.swap(dirty_);
    dir_dirty = std::exchange(dir_dirty_, false);
  }
  for (uint64_t index : dirty) {
    auto file = chunk_file(index, false);
    Status st = file ? Status::ok() : file.status();
    if (st && *file && ::fdatasync((*file)->get()) != 0) st = Status::from_errno("sync chunk " + chunk_path(index));
    if (!st) {
      std::lock_guard lock(mu_);
      dirty_.insert(dirty.begin(), dirty.end());  // try again next time
      dir_dirty_ = dir_dirty_ || dir_dirty;
      return st;
    }
  }
  if (dir_dirty && ::fsync(dir_fd_.get()) != 0) return Status::from_errno("sync directory " + path_);
  return Status::ok();
}

Status DirStore::trim(uint64_t offset, uint64_t length) { return write_zeroes(offset, length, true); }

Status DirStore::write_zeroes(uint64_t offset, uint64_t length, bool may_punch) {
  if (read_only_) return Status::error(EPERM, describe() + " is read-only");
  // Without permission to punch (NBD_CMD_FLAG_NO_HOLE) the zeros must be
  // allocated: write them, never delete chunk files.
  if (!may_punch) return Store::write_zeroes(offset, length, false);
  return for_each_chunk(offset, length, [&](uint64_t index, uint64_t in, uint64_t n, uint64_t) -> Status {
    if (in == 0 && (n == chunk_ || index * chunk_ + n == size_)) {
      forget(index);
      if (::unlinkat(dir_fd_.get(), chunk_path(index).c_str(), 0) != 0 && errno != ENOENT)
        return Status::from_errno("remove chunk " + chunk_path(index));
      std::lock_guard lock(mu_);
      dirty_.erase(index);
      dir_dirty_ = true;
      return Status::ok();
    }
    auto file = chunk_file(index, false);
    if (!file) return file.status();
    if (!*file) return Status::ok();  // missing chunk: already zeros
    const auto off = static_cast<off_t>(in), len = static_cast<off_t>(n);
    if (::fallocate((*file)->get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) != 0) {
      std::vector<std::byte> zeros(n);
      if (::pwrite((*file)->get(), zeros.data(), n, off) != static_cast<ssize_t>(n))
        return Status::from_errno("zero chunk " + chunk_path(index));
    }
    std::lock_guard lock(mu_);
    dirty_.insert(index);
    return Status::ok();
  });
}

Status DirStore::extents(uint64_t offset, uint64_t length, std::vector<Extent>& out) {
  return for_each_chunk(offset, length, [&](uint64_t index, uint64_t, uint64_t n, uint64_t) -> Status {
    struct stat st{};
    bool present = ::fstatat(dir_fd_.get(), chunk_path(index).c_str(), &st, 0) == 0;
    Extent e{n, !present, !present};
    if (!out.empty() && out.back().hole == e.hole && out.back().zero == e.zero)
      out.back().length += n;
    else
      out.push_back(e);
    return Status::ok();
  });
}

}  // namespace memsync
