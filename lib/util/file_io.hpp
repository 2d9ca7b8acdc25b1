// Whole-buffer positional writes: pwrite(2) until every byte is written.
//
// One loop for the places that put a buffer into a file at an offset (file
// stores, a connection's payload landing in a file, a cache filling itself),
// so EINTR and short writes are handled the same way everywhere.
// Thread safety: like pwrite(2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "util/status.hpp"

namespace memsync {

// Writes all of `buf` to `fd` at `offset`. `what` names the file in errors
// ("write " + what + ": " + strerror).
Status pwrite_all(int fd, std::span<const std::byte> buf, uint64_t offset, std::string_view what);

}  // namespace memsync
