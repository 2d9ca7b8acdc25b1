#include "util/units.hpp"

#include <cctype>
#include <cstdio>
#include <limits>

namespace memsync {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "123abc" into 123 and "abc". Fails on no digits or overflow.
Result<std::pair<uint64_t, std::string>> split_number(std::string_view text, const char* what) {
  size_t i = 0;
  uint64_t n = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (n > (std::numeric_limits<uint64_t>::max() - d) / 10)
      return Status::invalid(std::string(what) + " '" + std::string(text) + "' is too large");
    n = n * 10 + d;
    ++i;
  }
  if (i == 0)
    return Status::invalid(std::string(what) + " '" + std::string(text) + "' does not start with a number");
  return std::make_pair(n, lower(text.substr(i)));
}

}  // namespace

Result<uint64_t> parse_size(std::string_view text) {
  auto parts = split_number(text, "size");
  if (!parts) return parts.status();
  auto [n, unit] = parts.value();
  static constexpr std::string_view kUnits = "kmgtpe";
  unsigned shift = 0;
  if (!unit.empty()) {
    auto pos = kUnits.find(unit[0]);
    std::string_view rest = std::string_view(unit).substr(1);
    if (pos == std::string_view::npos || !(rest.empty() || rest == "b" || rest == "ib"))
      return Status::invalid("size '" + std::string(text) +
                             "' has an unknown unit (use a number with an optional K, M, G, T, P or E)");
    shift = 10 * static_cast<unsigned>(pos + 1);
  }
  if (shift && n > (std::numeric_limits<uint64_t>::max() >> shift))
    return Status::invalid("size '" + std::string(text) + "' is too large");
  return n << shift;
}

Result<uint64_t> parse_count(std::string_view text) {
  auto parts = split_number(text, "count");
  if (!parts) return parts.status();
  if (!parts->second.empty()) return Status::invalid("count '" + std::string(text) + "' must be a plain number");
  return parts->first;
}

Result<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  auto parts = split_number(text, "duration");
  if (!parts) return parts.status();
  auto [n, unit] = parts.value();
  uint64_t scale;
  if (unit.empty() || unit == "s") scale = 1'000'000'000ULL;
  else if (unit == "ms") scale = 1'000'000ULL;
  else if (unit == "us") scale = 1'000ULL;
  else if (unit == "ns") scale = 1ULL;
  else if (unit == "m") scale = 60'000'000'000ULL;
  else if (unit == "h") scale = 3'600'000'000'000ULL;
  else
    return Status::invalid("duration '" + std::string(text) +
                           "' has an unknown unit (use ns, us, ms, s, m or h)");
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / scale)
    return Status::invalid("duration '" + std::string(text) + "' is too large");
  return std::chrono::nanoseconds(static_cast<int64_t>(n * scale));
}

std::string format_size(uint64_t bytes) {
  static const char* kSuffix[] = {"", "K", "M", "G", "T", "P", "E"};
  int i = 0;
  while (i < 6 && bytes >= (1ULL << (10 * (i + 1)))) ++i;
  const uint64_t unit = 1ULL << (10 * i);
  char buf[32];
  if (bytes % unit == 0)
    std::snprintf(buf, sizeof buf, "%llu%s", static_cast<unsigned long long>(bytes / unit), kSuffix[i]);
  else
    std::snprintf(buf, sizeof buf, "%.1f%s", static_cast<double>(bytes) / static_cast<double>(unit), kSuffix[i]);
  return buf;
}

}  // namespace memsync
