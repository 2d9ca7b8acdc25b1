#include "kernel/swap_device.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "util/fd.hpp"

namespace memsync::kernel {
namespace {

constexpr size_t kVersionOffset = 1024;  // after bootbits
constexpr size_t kUuidOffset = 1036;
constexpr size_t kLabelOffset = 1052;
constexpr char kMagic[] = "SWAPSPACE2";
constexpr size_t kMagicSize = sizeof kMagic - 1;

void put_u32(std::vector<std::byte>& page, size_t offset, uint32_t v) {
  std::memcpy(page.data() + offset, &v, sizeof v);  // host order, as the kernel reads it
}

Status random_uuid(std::array<uint8_t, 16>& uuid) {
  size_t got = 0;
  while (got < uuid.size()) {
    ssize_t n = ::getrandom(uuid.data() + got, uuid.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("getrandom");
    }
    got += static_cast<size_t>(n);
  }
  // RFC 4122 version 4 (random), as libuuid's uuid_generate_random makes.
  uuid[6] = static_cast<uint8_t>((uuid[6] & 0x0F) | 0x40);
  uuid[8] = static_cast<uint8_t>((uuid[8] & 0x3F) | 0x80);
  return Status::ok();
}

// /proc/swaps escapes blanks and backslashes in paths as \ooo (seq_escape).
std::string unescape_octal(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' &&
        s[i + 2] >= '0' && s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

Result<std::vector<std::byte>> make_swap_header(uint64_t bytes, const SwapHeaderOptions& o) {
  size_t page = o.page_size ? o.page_size : static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  if (page < 4096 || (page & (page - 1)) != 0)
    return Status::invalid("swap page size " + std::to_string(page) + " is not a power of two of at least 4096");
  if (o.label.size() > kSwapLabelMax)
    return Status::invalid("swap label '" + o.label + "' is longer than " + std::to_string(kSwapLabelMax) + " bytes");
  uint64_t pages = bytes / page;
  if (pages < kSwapMinPages)
    return Status::invalid("a swap area needs at least " + std::to_string(kSwapMinPages) + " pages (" +
                           std::to_string(kSwapMinPages * page / 1024) + " KiB), not " + std::to_string(bytes) +
                           " bytes");
  if (pages > UINT32_MAX) pages = UINT32_MAX;  // last_page is 32 bits
  std::array<uint8_t, 16> uuid = o.uuid;
  if (uuid == std::array<uint8_t, 16>{}) MEMSYNC_TRY(random_uuid(uuid));

  std::vector<std::byte> h(page);
  put_u32(h, kVersionOffset, 1);
  put_u32(h, kVersionOffset + 4, static_cast<uint32_t>(pages - 1));
  put_u32(h, kVersionOffset + 8, 0);  // nr_badpages
  std::memcpy(h.data() + kUuidOffset, uuid.data(), uuid.size());
  std::memcpy(h.data() + kLabelOffset, o.label.data(), o.label.size());
  std::memcpy(h.data() + page - kMagicSize, kMagic, kMagicSize);
  return h;
}

Result<uint64_t> write_swap_header(const std::string& path, const SwapHeaderOptions& o) {
  struct stat st;
  if (::stat(path.c_str(), &st) < 0) return Status::from_errno("open " + path);
  const bool block = S_ISBLK(st.st_mode);
  // O_EXCL on a block device: refuse one that is mounted or active swap.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | (block ? O_EXCL : 0)));
  if (!fd.valid()) return Status::from_errno("open " + path);
  uint64_t bytes = static_cast<uint64_t>(st.st_size);
  if (block && ::ioctl(fd.get(), BLKGETSIZE64, &bytes) < 0) return Status::from_errno("size of " + path);
  auto header = make_swap_header(bytes, o);
  if (!header) return header.status().with_context(path);
  const size_t page = header->size();
  size_t done = 0;
  while (done < page) {
    ssize_t n = ::pwrite(fd.get(), header->data() + done, page - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::from_errno("write the swap header to " + path);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) < 0) return Status::from_errno("flush the swap header to " + path);
  uint64_t pages = std::min<uint64_t>(bytes / page, UINT32_MAX);
  return pages * page;
}

Status swap_on(const std::string& path, int priority) {
  if (priority < kSwapPriorityDefault || priority > kSwapPriorityMax)
    return Status::invalid("swap priority " + std::to_string(priority) + " is outside -1..32767");
  int flags = 0;
  if (priority >= 0) flags = SWAP_FLAG_PREFER | ((priority << SWAP_FLAG_PRIO_SHIFT) & SWAP_FLAG_PRIO_MASK);
  if (::swapon(path.c_str(), flags) < 0) return Status::from_errno("swapon " + path);
  return Status::ok();
}

Status swap_off(const std::string& path) {
  if (::swapoff(path.c_str()) < 0) return Status::from_errno("swapoff " + path);
  return Status::ok();
}

Result<std::optional<SwapArea>> find_swap_area(const std::string& path) {
  std::ifstream in("/proc/swaps");
  if (!in) return Status::from_errno("read /proc/swaps");
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    SwapArea a;
    std::string name, type;
    if (!(fields >> name >> type >> a.size_kib >> a.used_kib >> a.priority)) continue;
    a.path = unescape_octal(name);
    if (a.path == path) return std::optional<SwapArea>(a);
  }
  return std::optional<SwapArea>();
}

}  // namespace memsync::kernel
