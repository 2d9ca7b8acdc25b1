// Parsing of the sizes and durations every tool accepts.
//
// Sizes: a decimal integer with an optional binary suffix K, M, G, T, P, E
// (powers of 1024; "KiB" and "KB" spellings are accepted, case-insensitive),
// e.g. 4096, 64K, 512M, 4G. No fractions, no signs; overflow is an error.
// Durations: a decimal integer with a unit ns, us, ms, s, m, h; a bare number
// means seconds. e.g. 250ms, 5s, 5m.
//
// Errors are Status::invalid with a message that quotes the input and says
// what was expected. Thread safety: pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "util/status.hpp"

namespace memsync {

Result<uint64_t> parse_size(std::string_view text);
// A plain decimal count (no suffix), e.g. a number of files or threads.
Result<uint64_t> parse_count(std::string_view text);
Result<std::chrono::nanoseconds> parse_duration(std::string_view text);

// 1536 -> "1.5K", 4294967296 -> "4G": short human form for logs.
std::string format_size(uint64_t bytes);

}  // namespace memsync
