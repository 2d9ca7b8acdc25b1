#include "backend/file_store.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "util/file_io.hpp"
#include "util/units.hpp"

namespace memsync {

Result<std::shared_ptr<FileStore>> FileStore::open(const std::string& path, const FileStoreOptions& opts) {
  std::shared_ptr<FileStore> s(new FileStore());
  s->path_ = path;
  s->read_only_ = opts.read_only;
  int flags = (opts.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  bool created = false;
  int fd = ::open(path.c_str(), flags);
  if (fd < 0 && errno == ENOENT && opts.create_size && !opts.read_only) {
    fd = ::open(path.c_str(), flags | O_CREAT | O_EXCL, 0644);
    created = fd >= 0;
  }
  if (fd < 0) return Status::from_errno("open " + path);
  s->fd_.reset(fd);
  struct stat st{};
  if (::fstat(fd, &st) != 0) return Status::from_errno("stat " + path);
  if (S_ISBLK(st.st_mode)) {
    s->is_block_device_ = true;
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0) return Status::from_errno("BLKGETSIZE64 " + path);
    s->size_ = bytes;
  } else if (S_ISREG(st.st_mode)) {
    s->size_ = static_cast<uint64_t>(st.st_size);
  } else {
    return Status::invalid(path + " is neither a regular file nor a block device");
  }
  if (created) {
    if (::ftruncate(fd, static_cast<off_t>(*opts.create_size)) != 0) {
      Status st2 = Status::from_errno("set size of " + path);
      ::unlink(path.c_str());
      return st2;
    }
    s->size_ = *opts.create_size;
  } else if (opts.create_size && *opts.create_size != s->size_) {
    return Status::invalid(path + " exists with size " + std::to_string(s->size_) + ", not " +
                           std::to_string(*opts.create_size));
  }
  if (!s->read_only_ && !s->is_block_device_ && s->size_ > 0) {
    // Best effort: without the mapping, payloads take the splice path.
    auto m = Mapping::shared_file(fd, s->size_);
    if (m) {
      // File pages can always be written back and read again: under
      // mlockall (a swap-path server) they must not be pinned in RAM.
      ::munlock(m->bytes().data(), m->bytes().size());
      s->map_ = std::move(m).value();
    }
  }
  return s;
}

Status FileStore::read_at(std::span<std::byte> buf, uint64_t offset) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd_.get(), buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("read " + path_);
    }
    if (n == 0) {  // file shrank under us: what is missing reads as zeros
      std::memset(buf.data() + done, 0, buf.size() - done);
      break;
    }
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

Status FileStore::write_at(std::span<const std::byte> buf, uint64_t offset) {
  if (read_only_) return Status::error(EPERM, path_ + " is read-only");
  return pwrite_all(fd_.get(), buf, offset, path_);
}

Status FileStore::sync() {
  if (read_only_) return Status::ok();
  int r = is_block_device_ ? ::fsync(fd_.get()) : ::fdatasync(fd_.get());
  if (r != 0) return Status::from_errno("sync " + path_);
  return Status::ok();
}

Status FileStore::trim(uint64_t offset, uint64_t length) {
  if (read_only_) return Status::error(EPERM, path_ + " is read-only");
  if (is_block_device_) {
    uint64_t range[2] = {offset, length};
    if (::ioctl(fd_.get(), BLKDISCARD, range) != 0) {
      // Trim is advisory: a device that cannot discard just keeps its data.
      if (errno == EOPNOTSUPP || errno == EINVAL) return Status::ok();
      return Status::from_errno("discard on " + path_);
    }
    return Status::ok();
  }
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) != 0) {
    if (errno == EOPNOTSUPP) return Status::ok();
    return Status::from_errno("punch hole in " + path_);
  }
  return Status::ok();
}

Status FileStore::write_zeroes(uint64_t offset, uint64_t length, bool may_punch) {
  if (read_only_) return Status::error(EPERM, path_ + " is read-only");
  if (is_block_device_) {
    uint64_t range[2] = {offset, length};
    if (::ioctl(fd_.get(), BLKZEROOUT, range) == 0) return Status::ok();
    return Store::write_zeroes(offset, length, may_punch);
  }
  const auto off = static_cast<off_t>(offset), len = static_cast<off_t>(length);
  if (may_punch && ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
    return Status::ok();
  if (::fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) == 0) return Status::ok();
  // tmpfs has no ZERO_RANGE: punch, then allocate again when holes are not allowed.
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0) {
    if (!may_punch) (void)::fallocate(fd_.get(), FALLOC_FL_KEEP_SIZE, off, len);
    return Status::ok();
  }
  return Store::write_zeroes(offset, length, may_punch);
}

Status FileStore::extents(uint64_t offset, uint64_t length, std::vector<Extent>& out) {
  const uint64_t end = offset + length;
  // A file with as many blocks as bytes has no holes: say so without
  // SEEK_HOLE, which on tmpfs walks every page up to the next hole (ms per
  // call on a dense 1G file). "Data" is always a safe answer.
  struct stat st{};
  if (::fstat(fd_.get(), &st) == 0 && static_cast<uint64_t>(st.st_blocks) * 512 >= static_cast<uint64_t>(st.st_size)) {
    out.push_back({length, false, false});
    return Status::ok();
  }
  while (offset < end) {
    off_t data = ::lseek(fd_.get(), static_cast<off_t>(offset), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) {  // no data after offset: the rest is a hole
        out.push_back({end - offset, true, true});
        return Status::ok();
      }
      if (errno == EINVAL || errno == EOPNOTSUPP) {  // file system cannot tell
        out.push_back({end - offset, false, false});
        return Status::ok();
      }
      return Status::from_errno("SEEK_DATA in " + path_);
    }
    uint64_t d = std::min<uint64_t>(static_cast<uint64_t>(data), end);
    if (d > offset) {
      out.push_back({d - offset, true, true});
      offset = d;
      continue;
    }
    off_t hole = ::lseek(fd_.get(), static_cast<off_t>(offset), SEEK_HOLE);
    if (hole < 0) return Status::from_errno("SEEK_HOLE in " + path_);
    uint64_t h = std::min<uint64_t>(static_cast<uint64_t>(hole), end);
    if (h <= offset) h = end;  // defensive: never loop without progress
    out.push_back({h - offset, false, false});
    offset = h;
  }
  return Status::ok();
}

}  // namespace memsync
