// Swap on a block device without mkswap(8) or swapon(8): the version 1 swap
// header, and the swapon(2)/swapoff(2) calls, for ram-dl. The VM guest that
// tests it has only busybox, and a tool on the swap path should not depend
// on finding another program at the moment it needs it.
//
// The header is the first page of the area (PAGE_SIZE bytes), laid out as
// union swap_header in the kernel's include/linux/swap.h, fields in host
// byte order, as util-linux mkswap writes it:
//
//   offset          size  field
//   0               1024  bootbits: zero (room for a disk label)
//   1024            4     version = 1
//   1028            4     last_page: the index of the last usable page
//   1032            4     nr_badpages = 0
//   1036            16    sws_uuid
//   1052            16    sws_volume: the label, NUL-padded (15 bytes at most)
//   1068 .. page-11       zero
//   page-10         10    "SWAPSPACE2"
//
// Not promised: old signatures elsewhere on the device (a RAID superblock at
// its end, say) are not wiped, as mkswap's libblkid pass would; bad-block
// lists are never written.
//
// Thread safety: plain functions without shared state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "util/status.hpp"

namespace memsync::kernel {

inline constexpr uint64_t kSwapMinPages = 10;     // mkswap's minimum, also the kernel's sanity floor
inline constexpr size_t kSwapLabelMax = 15;       // sws_volume is 16 bytes; mkswap keeps a NUL
inline constexpr int kSwapPriorityMax = 32767;    // SWAP_FLAG_PRIO_MASK
inline constexpr int kSwapPriorityDefault = -1;   // swapon(8)'s "let the kernel choose"

struct SwapHeaderOptions {
  std::array<uint8_t, 16> uuid{};  // all zero: a random (version 4) UUID
  std::string label;               // up to 15 bytes; default none
  size_t page_size = 0;            // 0: this machine's page size
};

// The header page for a swap area of `bytes` bytes (a partial last page is
// not used). Fails with EINVAL when the area has fewer than kSwapMinPages
// pages, the label is longer than 15 bytes, or page_size is not a power of
// two of at least 4096. Areas above 2^32 pages are cut to that, as mkswap
// does.
Result<std::vector<std::byte>> make_swap_header(uint64_t bytes, const SwapHeaderOptions& o);

// Writes the header to the start of path (a block device, opened exclusive
// so that a mounted or active device fails with EBUSY; or a file, whose
// size counts) and flushes it to the device. Returns the size of the area
// in bytes (whole pages).
Result<uint64_t> write_swap_header(const std::string& path, const SwapHeaderOptions& o);

// swapon(2) with priority -1 (the kernel picks one below every other area)
// or 0..32767 (SWAP_FLAG_PREFER). Errors name the call and the path; EPERM
// means not root, EINVAL no swap signature, EBUSY already active.
Status swap_on(const std::string& path, int priority);
// swapoff(2): moves every page back into memory first, so it can take long
// and fails with ENOMEM when memory is too short to take them.
Status swap_off(const std::string& path);

// One line of /proc/swaps.
struct SwapArea {
  std::string path;
  uint64_t size_kib = 0;
  uint64_t used_kib = 0;
  int priority = 0;
};
// The active swap area at path (the kernel's name for it, e.g. /dev/nbd0);
// nullopt if it is not active. Fails only when /proc/swaps cannot be read.
Result<std::optional<SwapArea>> find_swap_area(const std::string& path);

}  // namespace memsync::kernel
