#include "backend/mem_store.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "util/units.hpp"

namespace memsync {

Result<std::shared_ptr<MemStore>> MemStore::create(uint64_t size) {
  auto m = Mapping::anonymous(static_cast<size_t>(size));
  if (!m) return m.status().with_context("mem:" + format_size(size));
  return std::shared_ptr<MemStore>(new MemStore(std::move(m).value()));
}

Status MemStore::read_at(std::span<std::byte> buf, uint64_t offset) {
  if (!in_range(offset, buf.size())) return Status::invalid("read beyond the end of mem:");
  if (!buf.empty()) std::memcpy(buf.data(), mem_.bytes().data() + offset, buf.size());
  return Status::ok();
}

Status MemStore::write_at(std::span<const std::byte> buf, uint64_t offset) {
  if (!in_range(offset, buf.size())) return Status::invalid("write beyond the end of mem:");
  if (!buf.empty()) std::memcpy(mem_.bytes().data() + offset, buf.data(), buf.size());
  return Status::ok();
}

Status MemStore::write_zeroes(uint64_t offset, uint64_t length, bool) {
  if (!in_range(offset, length)) return Status::invalid("zero beyond the end of mem:");
  std::byte* base = mem_.bytes().data();
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t first = (offset + page - 1) / page * page;
  uint64_t last = (offset + length) / page * page;
  if (first >= last) {  // no whole page inside: plain memset
    std::memset(base + offset, 0, length);
    return Status::ok();
  }
  std::memset(base + offset, 0, first - offset);
  std::memset(base + last, 0, offset + length - last);
  // Private anonymous pages read as zeros after MADV_DONTNEED, and their
  // memory goes back to the kernel: trim really frees RAM.
  if (::madvise(base + first, last - first, MADV_DONTNEED) != 0)
    std::memset(base + first, 0, last - first);
  return Status::ok();
}

std::string MemStore::describe() const { return "mem:" + format_size(size()); }

}  // namespace memsync
