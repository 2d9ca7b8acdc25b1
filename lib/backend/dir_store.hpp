// DirStore (`dir:PATH?size=SIZE&chunk=SIZE`): one file per chunk.
//
// Chunk i lives in PATH/<i as 16 hex digits>; a missing chunk file reads as
// zeros, so a fresh directory is an all-zero store that costs nothing.
// Geometry (size, chunk) is recorded in PATH/.memsync-dir at creation and
// checked on every later open, so a mistyped size cannot misread the data.
// At most max_open chunk files are open at once (least recently used are
// closed first); a file in use by another thread stays open until it is done.
// sync() fdatasyncs every chunk written since the last sync, then the
// directory. Trim of a whole chunk deletes its file. Multi-conn safe.
// Thread safety: as Store.
#pragma once

#include <list>
#include <mutex>
#include <set>
#include <unordered_map>

#include "backend/store.hpp"
#include "util/fd.hpp"

namespace memsync {

struct DirStoreOptions {
  std::optional<uint64_t> size;   // bytes; required unless the directory records it
  std::optional<uint64_t> chunk;  // bytes per chunk file; default 64K (or as recorded)
  size_t max_open = 64;           // open chunk files kept at most
  bool read_only = false;
};

class DirStore final : public Store {
 public:
  static Result<std::shared_ptr<DirStore>> open(const std::string& path, const DirStoreOptions& opts);

  uint64_t size() const override { return size_; }
  Status read_at(std::span<std::byte> buf, uint64_t offset) override;
  Status write_at(std::span<const std::byte> buf, uint64_t offset) override;
  Status sync() override;
  bool is_read_only() const override { return read_only_; }
  bool can_multi_conn() const override { return true; }
  bool can_trim() const override { return !read_only_; }
  Status trim(uint64_t offset, uint64_t length) override;
  Status write_zeroes(uint64_t offset, uint64_t length, bool may_punch) override;
  bool can_extents() const override { return true; }
  bool cheap_extents() const override { return true; }
  Status extents(uint64_t offset, uint64_t length, std::vector<Extent>& out) override;
  std::string describe() const override { return "dir:" + path_; }

  uint64_t chunk_size() const { return chunk_; }
  // Number of chunk files currently open (for tests of the bound).
  size_t open_files() const;

 private:
  DirStore() = default;
  std::string chunk_path(uint64_t index) const;
  // The open file of a chunk; null with ok status when missing and !create.
  Result<std::shared_ptr<UniqueFd>> chunk_file(uint64_t index, bool create);
  void forget(uint64_t index);
  // Calls fn(index, offset_in_chunk, length, offset_in_buffer) per chunk touched.
  template <class Fn> Status for_each_chunk(uint64_t offset, uint64_t length, Fn&& fn);

  std::string path_;
  UniqueFd dir_fd_;
  uint64_t size_ = 0, chunk_ = 0;
  size_t max_open_ = 64;
  bool read_only_ = false;

  mutable std::mutex mu_;  // guards the members below
  std::list<uint64_t> lru_;  // most recent first
  struct Entry { std::shared_ptr<UniqueFd> fd; std::list<uint64_t>::iterator pos; };
  std::unordered_map<uint64_t, Entry> open_;
  std::set<uint64_t> dirty_;
  bool dir_dirty_ = false;
};

}  // namespace memsync
