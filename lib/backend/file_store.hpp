// FileStore (`file:PATH`, or a plain path): a regular file or a block device.
//
// I/O is pread/pwrite on one descriptor with no lock around the file, so
// requests at different offsets run in parallel. A block device's size comes
// from the device (BLKGETSIZE64). Trim and write-zeroes use fallocate on
// regular files and BLKDISCARD/BLKZEROOUT on devices; extents come from
// SEEK_DATA/SEEK_HOLE on regular files. sync() is fdatasync (which also
// writes back pages dirtied through the mapping below).
// A writable regular file is also mapped MAP_SHARED for its whole size, so
// the NBD engine can receive WRITE payloads straight into the page cache
// (one copy instead of two; see Store::DirectRange::write_memory).
// Multi-conn safe: every connection shares the descriptor and page cache.
// Thread safety: as Store.
#pragma once

#include <optional>

#include "backend/store.hpp"
#include "util/fd.hpp"
#include "util/mapping.hpp"

namespace memsync {

struct FileStoreOptions {
  bool read_only = false;              // open O_RDONLY; writes fail with EPERM
  std::optional<uint64_t> create_size; // create the file with this size if missing;
                                       // an existing file must have this size
};

class FileStore final : public Store {
 public:
  static Result<std::shared_ptr<FileStore>> open(const std::string& path, const FileStoreOptions& opts = {});

  uint64_t size() const override { return size_; }
  Status read_at(std::span<std::byte> buf, uint64_t offset) override;
  Status write_at(std::span<const std::byte> buf, uint64_t offset) override;
  Status sync() override;
  bool is_read_only() const override { return read_only_; }
  bool can_multi_conn() const override { return true; }
  bool can_trim() const override { return !read_only_; }
  Status trim(uint64_t offset, uint64_t length) override;
  Status write_zeroes(uint64_t offset, uint64_t length, bool may_punch) override;
  bool can_fast_zero() const override { return !read_only_; }
  bool can_extents() const override { return !is_block_device_; }
  Status extents(uint64_t offset, uint64_t length, std::vector<Extent>& out) override;
  std::string describe() const override { return "file:" + path_; }
  // Regular files only: sendfile from a block device is no faster here.
  bool direct_range(uint64_t offset, uint64_t, Access, DirectRange& out) override {
    if (is_block_device_) return false;
    out.fd = fd_.get();
    out.file_offset = offset;
    if (map_) out.write_memory = map_.bytes().data() + offset;
    return true;
  }

 private:
  FileStore() = default;
  std::string path_;
  UniqueFd fd_;
  uint64_t size_ = 0;
  bool read_only_ = false;
  bool is_block_device_ = false;
  Mapping map_;  // MAP_SHARED view of a writable regular file, for WRITE payloads
};

}  // namespace memsync
