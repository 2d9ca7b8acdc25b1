// mmap-check: a test helper for the kernel batch (tests/kernel/attach.sh),
// not a tool. It proves that writes through a shared memory mapping of an
// NBD device (page cache -> writeback -> NBD_CMD_WRITE) reach the server's
// backing store:
//
//   mmap-check DEVICE OFFSET LENGTH SEED
//       opens DEVICE O_RDWR, mmaps LENGTH bytes at OFFSET (a multiple of the
//       page size) MAP_SHARED, fills them with the pattern of SEED,
//       msync(MS_SYNC), munmap, close.
//   mmap-check --verify FILE OFFSET LENGTH SEED
//       reads those bytes of FILE with pread and checks the same pattern.
//
// The pattern depends on SEED and on each byte's absolute position, so the
// device and its backing file are compared at the same offset. OFFSET and
// LENGTH are bytes, with an optional K, M or G suffix (powers of 1024).
// Exit status: 0 done / pattern matches; 1 an error or the first mismatch
// (printed on stderr); 2 usage error.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The pattern byte at absolute position pos.
uint8_t pattern_byte(uint64_t seed, uint64_t pos) {
  uint64_t word = splitmix64(seed * 0x100000001b3ULL ^ (pos / 8));
  return static_cast<uint8_t>(word >> (8 * (pos % 8)));
}

std::optional<uint64_t> parse_size(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t mult = 1;
  switch (s.back()) {
    case 'K': case 'k': mult = 1ULL << 10; break;
    case 'M': case 'm': mult = 1ULL << 20; break;
    case 'G': case 'g': mult = 1ULL << 30; break;
    default: break;
  }
  if (mult != 1) s.remove_suffix(1);
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    if (v > (UINT64_MAX - 9) / 10) return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > UINT64_MAX / mult) return std::nullopt;
  return v * mult;
}

int error(const std::string& what) {
  std::fprintf(stderr, "mmap-check: %s: %s\n", what.c_str(), std::strerror(errno));
  return 1;
}

int write_through_mmap(const char* dev, uint64_t offset, uint64_t length, uint64_t seed) {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (offset % page != 0) {
    std::fprintf(stderr, "mmap-check: OFFSET %llu is not a multiple of the page size (%llu)\n",
                 static_cast<unsigned long long>(offset), static_cast<unsigned long long>(page));
    return 1;
  }
  int fd = ::open(dev, O_RDWR | O_CLOEXEC);
  if (fd < 0) return error(std::string("open ") + dev);
  off_t end = ::lseek(fd, 0, SEEK_END);
  if (end < 0) return error(std::string("size of ") + dev);
  if (offset + length > static_cast<uint64_t>(end)) {
    std::fprintf(stderr, "mmap-check: %s has %lld bytes, fewer than OFFSET + LENGTH\n", dev,
                 static_cast<long long>(end));
    return 1;
  }
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return error(std::string("mmap ") + dev);
  auto* bytes = static_cast<uint8_t*>(p);
  for (uint64_t i = 0; i < length; ++i) bytes[i] = pattern_byte(seed, offset + i);
  if (::msync(p, length, MS_SYNC) < 0) return error(std::string("msync ") + dev);
  if (::munmap(p, length) < 0) return error(std::string("munmap ") + dev);
  if (::close(fd) < 0) return error(std::string("close ") + dev);
  return 0;
}

int verify(const char* file, uint64_t offset, uint64_t length, uint64_t seed) {
  int fd = ::open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return error(std::string("open ") + file);
  std::vector<uint8_t> buf(1 << 20);
  uint64_t done = 0;
  while (done < length) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), length - done));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return error(std::string("read ") + file);
    }
    if (n == 0) {
      std::fprintf(stderr, "mmap-check: %s ends at byte %llu, before OFFSET + LENGTH\n", file,
                   static_cast<unsigned long long>(offset + done));
      return 1;
    }
    for (ssize_t i = 0; i < n; ++i) {
      uint64_t pos = offset + done + static_cast<uint64_t>(i);
      uint8_t want_byte = pattern_byte(seed, pos);
      if (buf[static_cast<size_t>(i)] != want_byte) {
        std::fprintf(stderr, "mmap-check: %s: byte %llu is 0x%02x, want 0x%02x\n", file,
                     static_cast<unsigned long long>(pos), buf[static_cast<size_t>(i)], want_byte);
        return 1;
      }
    }
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: mmap-check DEVICE OFFSET LENGTH SEED\n"
               "       mmap-check --verify FILE OFFSET LENGTH SEED\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  bool check = argc == 6 && std::string_view(argv[1]) == "--verify";
  if (argc != 5 && !check) return usage();
  char** a = argv + (check ? 2 : 1);
  auto offset = parse_size(a[1]), length = parse_size(a[2]), seed = parse_size(a[3]);
  if (!offset || !length || !seed || *length == 0) return usage();
  return check ? verify(a[0], *offset, *length, *seed) : write_through_mmap(a[0], *offset, *length, *seed);
}
