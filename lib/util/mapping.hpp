// Mapping: the one owner of an mmap'ed region. munmap on destruction.
// Thread safety: the object is not synchronised; the bytes are the caller's.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <span>
#include <utility>

#include "util/status.hpp"

namespace memsync {

class Mapping {
 public:
  Mapping() = default;
  // Anonymous private memory of `length` bytes, zero-filled on first touch.
  // MAP_NORESERVE: a huge mem: export costs only the pages written.
  static Result<Mapping> anonymous(size_t length);
  // A MAP_SHARED read-write view of fd's first `length` bytes.
  static Result<Mapping> shared_file(int fd, size_t length);

  Mapping(Mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), len_(std::exchange(o.len_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) { reset(); addr_ = std::exchange(o.addr_, nullptr); len_ = std::exchange(o.len_, 0); }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  std::span<std::byte> bytes() const { return {static_cast<std::byte*>(addr_), len_}; }
  explicit operator bool() const { return addr_ != nullptr; }

 private:
  Mapping(void* addr, size_t len) : addr_(addr), len_(len) {}
  void reset() {
    if (addr_) ::munmap(addr_, len_);
    addr_ = nullptr;
    len_ = 0;
  }
  void* addr_ = nullptr;
  size_t len_ = 0;
};

}  // namespace memsync
