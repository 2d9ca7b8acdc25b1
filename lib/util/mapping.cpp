#include "util/mapping.hpp"

namespace memsync {

Result<Mapping> Mapping::anonymous(size_t length) {
  if (length == 0) return Mapping();
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return Status::from_errno("mmap of " + std::to_string(length) + " bytes");
  return Mapping(p, length);
}

Result<Mapping> Mapping::shared_file(int fd, size_t length) {
  if (length == 0) return Mapping();
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Status::from_errno("mmap of a file of " + std::to_string(length) + " bytes");
  return Mapping(p, length);
}

}  // namespace memsync
